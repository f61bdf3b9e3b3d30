"""Nothing from the data in messages, and runs that cannot work refused before any work:
a header-less file read with a header, a secret file as data, overflowing values, a table a
million columns wide, ten thousand institutions."""

from pathlib import Path

from fedsilo.limits import MAX_COLUMNS, MAX_INSTITUTIONS
from tests.cli.test_cli import HEART, heart_config, run_cli

COLUMNS_LINE = ('columns = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", '
                '"thalach", "exang",\n           "oldpeak", "slope", "ca", "thal", "num"]\n')


def first_line(name: str) -> str:
    return (HEART / "data" / f"processed.{name}.data").read_text().splitlines()[0]


def test_a_header_less_file_read_with_a_header_echoes_no_value(tmp_path, capsys):
    cfg = heart_config(tmp_path, (COLUMNS_LINE, 'numeric = ["age", "chol"]\n'))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "missing column(s)" in out and "data.columns" in out
    for value in first_line("cleveland").split(",")[:5]:
        assert f"'{value}'" not in out  # the first record is data, not names


def test_a_private_file_given_as_data_is_not_quoted(tmp_path, capsys):
    secret = tmp_path / "shadow"
    secret.write_text("admin7:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n"
                      "daemon:*:19000:0:99999:7:::\n")
    cfg = heart_config(tmp_path, ("data/processed.va.data", str(secret)))
    cfg.write_text(cfg.read_text().replace(f'"{HEART}/{secret}"', f'"{secret}"'))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "shadow" in out
    assert "admin7" not in out and "hashhash" not in out and "daemon" not in out
    cfg.write_text(cfg.read_text().replace(COLUMNS_LINE, 'numeric = ["age", "chol"]\n'))
    code, out = run_cli(["run", str(cfg)], capsys)  # its first line read as a header
    assert code == 2 and "missing column(s)" in out
    assert "admin7" not in out and "hashhash" not in out and "daemon" not in out


def test_overflowing_values_are_refused_by_their_institution(tmp_path, capsys):
    rows = (HEART / "data" / "processed.va.data").read_text().splitlines()
    fields = rows[0].split(",")
    fields[4] = "1e308"  # chol
    rows[0] = ",".join(fields)
    data = tmp_path / "va.data"
    data.write_text("\n".join(rows) + "\n")
    cfg = heart_config(tmp_path, (f"{HEART}/data/processed.va.data", str(data)))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2, out
    assert "column 'chol' of institution 'va-long-beach'" in out and "1 row(s)" in out
    assert "1e308" not in out and "1e+308" not in out


def test_a_million_columns_are_refused_from_the_first_line(tmp_path, capsys):
    wide = tmp_path / "wide.csv"
    with open(wide, "w") as f:
        f.write(",".join(f"c{i}" for i in range(1_000_000)) + "\n")
        f.write(",".join("1" for _ in range(1_000_000)) + "\n")
    cfg = heart_config(tmp_path, (f"{HEART}/data/processed.va.data", str(wide)))
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and f"at most {MAX_COLUMNS} columns" in out and "wide.csv" in out
    assert len(out) < 2000  # a short message, not the header


def test_more_institutions_than_the_limit_are_refused_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "many.toml"
    cfg.write_text(f"""
[data]
task = "binary"
target = "num"
[data.partition]
path = "{HEART}/data/processed.cleveland.data"
institutions = {MAX_INSTITUTIONS + 1}
[model]
kind = "logistic_regression"
""")
    code, out = run_cli(["run", str(cfg)], capsys)
    assert code == 2 and "data.partition.institutions" in out and str(MAX_INSTITUTIONS) in out
    assert not Path(tmp_path / "results").exists()
