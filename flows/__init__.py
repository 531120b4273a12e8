"""Prefect flows over the pipeline: extract, train, evaluate, predict, extract-and-train.

Thin wrappers: each task calls one pipeline function and returns paths or small JSON summaries;
deployments are in prefect.yaml. Only this package imports prefect.
"""
