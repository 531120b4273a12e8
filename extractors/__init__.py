"""Feature extractors: per-utterance text, audio and visual vectors (see base.py for the contract).

Modules: text (sentence-transformers), wav2vec (transformers wav2vec2), opensmile_audio
(openSMILE functionals), faces (MTCNN detection and per-utterance pooling, shared by:) visual
(DenseNet121) and fer_visual (the FER2013 CNN of fer_net, offline), presets (named sets),
weights (hashes).
Nothing is imported here, so ``import extractors.base`` stays free of torch.
"""
