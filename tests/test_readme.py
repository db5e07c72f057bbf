"""The README's ten-line example runs as written (docs that match behaviour)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_ten_line_example_runs(tmp_path, monkeypatch) -> None:
    text = README.read_text()
    section = text[text.index("## Ten lines") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 11
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"model.onnx", "manifest.json", "luts"}
