"""Stage 2, features: manifest + media -> feature store -> FeatureSet.

In: a manifest (pipeline.dataset) and an extractor preset (extractors/). Out: entries in the
content-addressed feature store and a FeatureSet directory, the one thing training reads; also
FeatureSets imported from published pickles (importers/) and exported to them (exporters.py).

Contracts owned: the FeatureSet format (featureset.py, `FeatureSetError`), the feature store's
entry format, index and claims (store.py), the extraction plan, its run on a thread-pool Runner
and failures report, and the FeatureSet assembled from the plan (extract.py). One pass: a manifest is planned
once (`extract.plan_extraction`: rows, extractors, keys), run, and assembled from the same plan.
"""
