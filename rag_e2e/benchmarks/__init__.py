"""Benchmarks and prepared device checks (`python -m rag_e2e.benchmarks.<name>`); common.py holds what they share."""
