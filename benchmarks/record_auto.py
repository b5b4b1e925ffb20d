"""Record the backend orders measured by the benchmarks (the "auto" cases of results/*.json, or of
the folder given) in fastdiff/measured.json, which `auto` reads: each op measured on a device
replaces that op's earlier cases for the device; other devices and ops are kept. Each device keeps
the provenance of its latest recording (fastdiff commit, torch, triton, folder). Commit the file to
ship them. Rows that failed (those with an "error") measured nothing and are left out. Cases that
auto cannot tell apart (the same dtype, layout and sizes: gated and plain adaln, GroupNorms of one
size with other channel counts) become one, its backends ordered by their summed times.

    python benchmarks/record_auto.py [RESULTS_FOLDER]
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = ROOT / "fastdiff" / "measured.json"


def provenance(env: dict, folder: pathlib.Path) -> str:
    commit = env.get("commit", "?") + (" with local edits" if env.get("dirty") else "")
    return (f"fastdiff {env.get('fastdiff', '?')} at {commit}, torch {env.get('torch', '?')}, "
            f"triton {env.get('triton', '?')}; benchmarks in {folder.name}/")


def merged(cases: list[dict], what: str) -> list[dict]:
    """The cases, those of one key made one (in the place of the first), without their times."""
    alike: dict = {}
    for case in cases:
        key = json.dumps({k: v for k, v in case.items() if k not in ("order", "us")}, sort_keys=True)
        alike.setdefault(key, []).append(case)
    out = []
    for group in alike.values():
        first = {k: v for k, v in group[0].items() if k != "us"}
        if len(group) > 1:
            if not all(set(c.get("us", ())) == set(first["order"]) for c in group):
                sys.exit(f"record_auto.py: {what}: {len(group)} cases share the key {first} without times "
                         "for the same backends; rerun the benchmark")
            first["order"] = sorted(first["order"], key=lambda b: sum(c["us"][b] for c in group))
        out.append(first)
    return out


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1:
        sys.exit("usage: record_auto.py [RESULTS_FOLDER]")
    folder = pathlib.Path(args[0]) if args else ROOT / "results"
    if not folder.is_dir():
        sys.exit(f"record_auto.py: RESULTS_FOLDER {folder} is not a folder")
    table = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    fresh = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "env" not in data:
            continue  # not a benchmark's results
        failed = [r for r in data.get("rows", []) if "error" in r]
        if failed:  # a failed row times nothing: only the backends that ran are ordered
            print(f"{path.name}: {len(failed)} failed rows left out")
        for case in data.get("auto", []):
            if not case.get("order"):
                continue
            case = dict(case)
            ops = fresh.setdefault(data["env"]["device"], {"provenance": provenance(data["env"], folder)})
            ops.setdefault(case.pop("op"), []).append(case)
    for device, ops in fresh.items():
        for op, cases in ops.items():
            if op != "provenance":
                ops[op] = merged(cases, f"{device} {op}")
        table.setdefault(device, {}).update(ops)
        print(f"{device}: " + ", ".join(f"{op} ({len(cases)} cases)" for op, cases in sorted(ops.items())
                                        if op != "provenance"))
    TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
