"""Tokenize, pack and shard documents into training sequences (S1/S2/S3 curriculum stages).

tokenizer.py  the exact Qwen3 tokenizer (tiktoken fast path, HF ``tokenizers`` fallback)
indexed.py    Megatron-compatible indexed datasets (.bin/.idx), writer and small reader
pack.py       packing whole documents into fixed-length sequences; rank assignment
export.py     export_stage: documents -> tokenized, packed, sharded stage with manifest
token_batch.py TokenBatch: already-tokenised documents (mix/scan's ids), the export's fast input
"""
