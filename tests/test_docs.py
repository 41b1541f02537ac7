"""The docs site covers what the code has: a page per task and head (in the nav, with the head's settings taken
from the generated reference), pipeline examples that validate, and a README that fits on a screen or two.
`make docs` (in CI) builds the site with --strict, which fails on a broken link, anchor or picture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cvpipe.loading import load_pipeline
from cvpipe.models.heads.registry import heads
from cvpipe.tasks import tasks

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def nav_pages() -> list[str]:
    def walk(node) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [page for value in node.values() for page in walk(value)]
        return [page for item in node for page in walk(item)]

    return walk(mkdocs_config()["nav"])


def mkdocs_config() -> dict:
    """mkdocs.yml as data; MkDocs' own tags (`!relative $config_dir/docs`) read as plain text."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, tag, node: f"{tag} {loader.construct_scalar(node)}")
    return yaml.load((REPO / "mkdocs.yml").read_text(), Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def test_every_task_and_head_has_a_page_in_the_nav():
    pages = set(nav_pages())
    for name in tasks():
        assert f"tasks/{name}.md" in pages, f"task {name} has no page in mkdocs.yml's nav"
    for name in heads():
        assert f"heads/{name}.md" in pages, f"head {name} has no page in mkdocs.yml's nav"
        text = (DOCS / "heads" / f"{name}.md").read_text()
        assert f'--8<-- "reference/config.md:{name}"' in text, f"docs/heads/{name}.md does not include its settings"
    assert all((DOCS / page).is_file() for page in pages), "mkdocs.yml's nav names a page that does not exist"


def test_each_heads_settings_section_is_in_the_reference():
    reference = (DOCS / "reference" / "config.md").read_text()
    for name in heads():
        start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
        assert start in reference and end in reference
        section = reference[reference.index(start):reference.index(end)]
        assert "| `model.head." in section, f"{name}'s section has no settings table"


def yaml_examples() -> list[tuple[str, str]]:
    """Every YAML block in the docs that is a whole pipeline (it has a name and a task)."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S):
            if re.search(r"^name:", block, flags=re.M) and re.search(r"^task:", block, flags=re.M):
                found.append((str(page.relative_to(DOCS)), block))
    return found


@pytest.mark.parametrize("page,block", yaml_examples(), ids=[page for page, _ in yaml_examples()])
def test_pipeline_examples_in_the_docs_validate(page, block, tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(block)
    load_pipeline(path)  # the schema and the checks that need the libraries; raises ConfigError with every problem


def test_the_quickstart_has_a_pipeline_example():
    assert any(page == "quickstart/finetune.md" for page, _ in yaml_examples())


def test_readme_fits_and_keeps_the_two_first_screen_commands():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:40])
    assert "make demo" in first_screen and "make test" in first_screen


def test_readme_pictures_exist():  # the site's own are checked by `mkdocs build --strict`
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (REPO / "README.md").read_text()):
        assert (REPO / target).is_file(), f"README.md shows missing {target}"
