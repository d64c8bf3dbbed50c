"""The page `dvc plots show` writes, offline: a DVC HTML template (`.dvc/config` `[plots]
html_template`) that carries Vega, Vega-Lite and Vega-Embed inline, from the `vl-convert-python`
package installed with the project, instead of DVC's default page that loads them from a CDN.

`python -m lmops.plotpage` (run by `make install`) writes it to `.dvc/plots/offline.html`
(git-ignored: it is built from the installed package, about 0.9 MB)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEMPLATE = Path(".dvc/plots/offline.html")  # `.dvc/config` names it relative to .dvc/: plots/offline.html

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>lmops plots</title>
    <!-- Vega, Vega-Lite and Vega-Embed, bundled by vl-convert-python __VERSION__: no network needed -->
    <script type="text/javascript">__BUNDLE__</script>
    <style>
        body { font-family: sans-serif; margin: 16px; }
        table { border-spacing: 15px; }
        img { max-width: 900px; }
    </style>
</head>
<body>
    <h1>lmops plots</h1>
    {plot_divs}
</body>
</html>"""


def page_html() -> str:
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    if "</script" in bundle.lower():
        raise RuntimeError("the Vega bundle cannot be inlined: it contains '</script'")
    version = getattr(vl_convert, "__version__", "?")
    return PAGE.replace("__VERSION__", version).replace("__BUNDLE__", bundle)


def write(root: Path = Path(".")) -> Path:
    out = Path(root) / TEMPLATE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(page_html(), encoding="utf8")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lmops.plotpage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".", help="project directory (holding .dvc/)")
    print(f"wrote {write(Path(ap.parse_args(argv).root))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
