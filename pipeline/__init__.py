"""Raw conversation video to per-utterance emotions, one subpackage per stage.

    dataset   -> features  -> training  -> inference  -> cli

A stage imports only earlier stages and the shared helpers at this level
(progress_bar.py, files.py, timecode.py);
cli/ may import all of them (tests/test_import_direction.py checks both rules).
"""
