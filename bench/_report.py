"""What the benchmarks share: a Markdown table and the JSON + Markdown result files."""

import json
from pathlib import Path


def markdown_report(title, intro, columns, cells):
    """A Markdown page: ``# title``, a paragraph, and a table.

    ``columns`` is a list of ``(header, right_aligned)``; ``cells`` a list of rows of strings.
    """
    lines = [f"# {title}", "", intro, "",
             "| " + " | ".join(header for header, _ in columns) + " |",
             "|" + "|".join("---:" if right else "---" for _, right in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_results(out_dir, stem, rows, meta, text):
    """Write ``{stem}.json`` (``meta`` and ``rows``) and ``{stem}.md`` (``text``); print ``text``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(text)
    print(text)
