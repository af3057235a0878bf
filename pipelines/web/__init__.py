"""Web text: WARC reading, HTML decoding and main-text extraction."""
