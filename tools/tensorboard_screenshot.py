"""Regenerate ``docs/tensorboard.png``: TensorBoard's Custom Scalars tab over ``normguard demo``'s runs.

Runs ``normguard demo`` (four runs: no intervention, early stopping, normguard's ``stop`` and
``hold_floor``) into a scratch directory, serves it with a real TensorBoard on 127.0.0.1 from
inside that directory (so the sidebar shows ``runs/normguard-demo``, never a temporary path),
opens the Custom Scalars tab in headless Chromium at 1400 × 1000 and saves the screenshot
once every chart of the ``normguard`` category is drawn. Run::

    python tools/tensorboard_screenshot.py                  # writes docs/tensorboard.png
    python tools/tensorboard_screenshot.py --out shot.png --steps 600

Needs ``chromium``, ``chromium-driver`` and ``selenium`` (see ``tools/browser_check.py``).
Exit status 0 when the screenshot was written, 1 when the charts were not all drawn, 2 when
the browser is missing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import browser_check as bc

from normguard import tags

LOG_DIR = "runs/normguard-demo"
RUNS = ["none", "early_stopping", "stop", "hold_floor"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", default=str(root / "docs" / "tensorboard.png"))
    parser.add_argument("--steps", type=int, default=2000, help="demo steps (default: %(default)s)")
    args = parser.parse_args(argv)
    browser = bc.find_browser()
    if isinstance(browser, str):
        print(f"tensorboard_screenshot: {browser}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="normguard-shot-") as scratch:
        work = Path(scratch)
        demo = [sys.executable, "-m", "normguard", "demo", "--out-dir", LOG_DIR, "--steps", str(args.steps)]
        subprocess.run([*demo, "--no-progress"], cwd=work, check=True, stdout=subprocess.DEVNULL)
        here = Path.cwd()
        os.chdir(work)  # TensorBoard shows --logdir as given: a relative path, no temporary directory
        try:
            with (
                bc.tensorboard(Path(LOG_DIR), RUNS, work / "tensorboard.log") as base,
                bc.chrome(*browser, work / "profile") as driver,
            ):
                return shoot(driver, base, out)
        finally:
            os.chdir(here)


def shoot(driver: object, base: str, out: Path) -> int:
    bc.viewport(driver, *bc.FIRST_SCREEN)
    driver.get(f"{base}/#custom_scalars")  # type: ignore[attr-defined]
    expected = len(tags.custom_scalars_layout()[tags.PREFIX])
    script = (
        bc._DEEP_ALL.replace("return found;", "")
        + """
        return found.map(card => {
          const paths = [];
          const walk = (r) => { paths.push(...r.querySelectorAll('path'));
            for (const el of r.querySelectorAll('*')) if (el.shadowRoot) walk(el.shadowRoot); };
          walk(card.shadowRoot);
          return paths.filter(p => (p.getAttribute('d') || '').split(/[LC]/).length > 5).length;
        });
    """
    )

    def drawn() -> bool:
        counts = driver.execute_script(script, "tf-custom-scalar-multi-line-chart-card")  # type: ignore[attr-defined]
        return sum(c > 0 for c in counts) >= min(expected, 6)  # the charts of the first screens

    try:
        bc.wait_until("the Custom Scalars charts to be drawn", drawn)
    except TimeoutError as exc:
        print(f"tensorboard_screenshot: {exc}", file=sys.stderr)
        return 1
    time.sleep(1.5)  # let the last chart finish its transition
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))  # type: ignore[attr-defined]
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
