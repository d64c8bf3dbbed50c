"""Deploy the fan-out (flows/fanout.py) from a git repository: each cell run clones the repository
with Prefect's git-clone pull step (`GitRepository`), so a worker needs only the venv, git, DVC and
the DVC remote's credentials, never a path on this host. The spec (`deployments/prefect.yaml`,
entries `grid` and `grid-cell`) holds the names, entrypoints and parameters.

    python -m deployments.fanout --repo https://git.example.com/lmops.git --branch main --pool lmops-grid
"""
from __future__ import annotations

import argparse

from deployments.spec import entry, pool


def deploy_fanout(repo: str, branch: str | None = None, work_pool: str | None = None) -> dict[str, str]:
    """Both deployments, their code pulled from `repo` (any URL git clones: https, ssh, file://)."""
    from prefect import flow
    from prefect.runner.storage import GitRepository

    ids = {}
    for name in ("grid-cell", "grid"):
        dep = entry(name)
        src = flow.from_source(source=GitRepository(url=repo, branch=branch), entrypoint=dep["entrypoint"])
        ids[name] = str(src.deploy(name=dep["name"], work_pool_name=work_pool or pool(dep), build=False, push=False,
                                   description=dep.get("description"), parameters=dep.get("parameters") or {},
                                   print_next_steps=False))
    return ids


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--branch")
    ap.add_argument("--pool")
    args = ap.parse_args(argv)
    print(deploy_fanout(args.repo, args.branch, args.pool))


if __name__ == "__main__":
    main()
