"""Ready-made python stages (`function = "enrichkit.builtin:<name>"`)."""

from __future__ import annotations


def email_domain(record: dict[str, str]) -> dict[str, str]:
    """The domain of the record's e-mail: an enriched `poc_email` if present, else any column naming an e-mail."""
    candidates = [record.get("poc_email", "")] + [v for k, v in record.items() if "email" in k.lower()]
    for value in candidates:
        if value and "@" in value:
            return {"email_domain": value.rsplit("@", 1)[1].strip().lower().rstrip(".>")}
    return {"email_domain": ""}


def noop(record: dict[str, str]) -> dict[str, str]:
    """Adds nothing; measures enrichkit's own overhead (`make bench`)."""
    return {}
