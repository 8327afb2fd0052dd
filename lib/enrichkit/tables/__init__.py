"""Input tables: `records` (the `Table` protocol, `InputTable`, what the readers share, record IDs), one reader
per format (`delimited` CSV/TSV, `jsonlines`, `xlsx` over `workbooks`; `text` for what the text ones share),
`sniffing` (encoding, separator, line ends), `scan` (the pending scan) and `precount` (the exact pre-count)."""
