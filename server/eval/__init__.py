"""Evaluation harness for medical VQA (VQA-RAD, SLAKE, PathVQA, LLaVA-Med's converted files).

Torch-free and Python 3.8 compatible: `tinyllava-med eval --url` runs on the device side too.
datasets.py loads the official layouts into EvalItem, predictions.py keeps the answer file
(resumable jsonl), normalize.py + metrics.py score answers the way LLaVA-Med's evaluator does,
scoring.py joins data set and answers into a report, report.py writes and compares reports,
runner.py asks a bundle or a running service (client.py, stdlib HTTP) and writes the answer file.
"""
