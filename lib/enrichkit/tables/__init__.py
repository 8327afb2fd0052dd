"""Input tables: CSV/JSONL/XLSX readers and record IDs, sniffing, the pending scan, the pre-count."""
