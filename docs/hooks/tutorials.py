"""MkDocs hook: the tutorials, executed at every build and rendered with their outputs and figures.

Each tutorial is a script in ``docs/tutorials/`` in jupytext's percent format (``# %%`` code cells,
``# %% [markdown]`` text cells): it runs as a plain script (``python docs/tutorials/01-information.py``) and opens
as a notebook in Jupyter with jupytext. At build time every script is read with jupytext, executed in a fresh
IPython kernel (nbclient) in an empty temporary folder, and turned into a Markdown page: the text cells as they
are, each code cell as a code block followed by what it printed and the figures it showed (PNG files beside the
page). Two scripts run at a time, each in its own kernel (:data:`WORKERS`). A cell that raises fails the build, and so
does an ``assert`` in a tutorial that does not hold. The
``Tutorials`` entry of the nav in ``mkdocs.yml`` gets one page per script, titled by its first heading.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.plugins.tutorials")

NAV_TITLE = "Tutorials"
FOLDER = "tutorials"
CELL_TIMEOUT = 300  # seconds one cell may run before the build fails
#: Tutorials executed at once, each in a kernel of its own on one thread: two fill a 2-core CPU (the six took 35 s
#: one after another, 19.5 s two at a time, the same CPU time), more would only queue.
WORKERS = max(1, min(2, os.cpu_count() or 1))
#: The kernel's environment on top of the build's: one thread per process (the tutorials' models are tiny, and
#: on a busy CPU more threads only wait for each other); no progress bars in the pages.
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
#: A first cell run before each tutorial and left out of its page: figures as PNG at a readable resolution.
SETUP = ("get_ipython().run_line_magic('config', \"InlineBackend.figure_formats = ['png']\")\n"
         "get_ipython().run_line_magic('config', \"InlineBackend.print_figure_kwargs = "
         "{'bbox_inches': 'tight', 'dpi': 110}\")")
SETUP_TAG = "vaekit-docs-setup"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def scripts(docs_dir: Path) -> list[Path]:
    """The tutorial scripts, in the order of their file names (``01-...``, ``02-...``)."""
    return sorted((docs_dir / FOLDER).glob("[0-9]*.py"))


def title(script: Path) -> str:
    """The first Markdown heading of a tutorial script."""
    for line in script.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^#\s+#\s+(.+)$", line):
            return m[1].strip()
    return script.stem


def execute(script: Path) -> Any:
    """The script as a notebook, executed in a fresh kernel in an empty folder."""
    import jupytext
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    notebook = jupytext.read(script)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(SETUP, metadata={"tags": [SETUP_TAG]}))
    with tempfile.TemporaryDirectory(prefix="vaekit-tutorial-") as cwd:
        # local sockets in the temporary folder rather than TCP ports
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(cwd, "kernel"))
        client = NotebookClient(notebook, km=kernel, timeout=CELL_TIMEOUT, resources={"metadata": {"path": cwd}})
        try:
            client.execute(env={**os.environ, **KERNEL_ENV})
        finally:  # a kernel manager given to nbclient is ours to stop
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
    notebook.cells = [c for c in notebook.cells if SETUP_TAG not in c.metadata.get("tags", [])]
    return notebook


def _fence(body: str, lang: str = "text") -> list[str]:
    ticks = "```"
    while ticks in body:
        ticks += "`"
    return [f"{ticks}{lang}", body.rstrip("\n"), ticks, ""]


def render(notebook: Any, stem: str) -> tuple[str, dict[str, bytes]]:
    """A notebook's Markdown, and its figures (file name -> PNG bytes) to place in the folder ``stem``/."""
    lines: list[str] = []
    figures: dict[str, bytes] = {}
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            lines += [cell.source, ""]
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        lines += _fence(cell.source, "python")
        text: list[str] = []
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream" and output.get("name") == "stdout":
                text.append(output["text"])
            elif kind == "error":
                text.append(ANSI.sub("", "\n".join(output.get("traceback", []))))
            elif kind in ("execute_result", "display_data"):
                data = output.get("data", {})
                if "image/png" in data:
                    if text:
                        lines += _fence("".join(text))
                        text = []
                    name = f"figure-{len(figures) + 1}.png"
                    figures[name] = base64.b64decode(data["image/png"])
                    lines += [f"![figure {len(figures)} of this tutorial]({stem}/{name}){{ .tutorial-figure }}", ""]
                elif "text/plain" in data and kind == "execute_result":
                    text.append(data["text/plain"] + "\n")
        if text:
            lines += _fence("".join(text))
    return "\n".join(lines) + "\n", figures


def on_config(config: Any) -> Any:
    docs_dir = Path(config["docs_dir"])
    pages = [{title(s): f"{FOLDER}/{s.stem}.md"} for s in scripts(docs_dir)]
    nav = config.get("nav") or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and NAV_TITLE in item:
            overview = [entry for entry in item[NAV_TITLE] if isinstance(entry, str)]
            nav[i] = {NAV_TITLE: [*overview, *pages]}
    return config


def _timed_execute(script: Path) -> tuple[Any, float]:
    start = time.perf_counter()
    notebook = execute(script)
    return notebook, time.perf_counter() - start


def on_files(files: Files, config: Any) -> Files:
    docs_dir = Path(config["docs_dir"])
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:  # the first error is raised here, in the scripts' order
        executed = list(pool.map(_timed_execute, scripts(docs_dir)))
    for script, (notebook, seconds) in zip(scripts(docs_dir), executed):
        body, figures = render(notebook, script.stem)
        note = (f'!!! note ""\n    This page is the script [`{script.name}`]({script.name}), executed when the site '
                f"was built ({seconds:.0f} s on a CPU). Run it with `python {script.name}`, or open it in Jupyter as "
                "a notebook (with `jupytext`).\n\n")
        head, _, rest = body.partition("\n")
        page = f"{head}\n\n{note}{rest}" if head.startswith("# ") else note + body
        files.append(File.generated(config, f"{FOLDER}/{script.stem}.md", content=page))
        for name, png in figures.items():
            files.append(File.generated(config, f"{FOLDER}/{script.stem}/{name}", content=png))
        log.info("tutorial %s: executed in %.1f s, %d figure(s)", script.name, seconds, len(figures))
    return files
