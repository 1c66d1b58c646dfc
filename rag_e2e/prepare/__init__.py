"""Raw documents -> a passage corpus: extract, clean, dedupe, chunk (`rag-e2e prepare`, see `pipeline.py`)."""
