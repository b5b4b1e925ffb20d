"""Record the backend orders measured by the benchmarks (the "auto" cases of results/*.json) in
fastdiff/measured.json, which `auto` reads: each op measured on this device replaces that op's
earlier cases for the device; other devices and ops are kept. Commit the file to ship them.
Rows that failed (those with an "error") measured nothing and are left out."""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TABLE = ROOT / "fastdiff" / "measured.json"


def main():
    table = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    fresh = {}
    for path in sorted((ROOT / "results").glob("*.json")):
        data = json.loads(path.read_text())
        failed = [r for r in data.get("rows", []) if "error" in r]
        if failed:  # a failed row times nothing: only the backends that ran are ordered
            print(f"{path.name}: {len(failed)} failed rows left out")
        for case in data.get("auto", []):
            if not case.get("order"):
                continue
            case = dict(case)
            fresh.setdefault(data["env"]["device"], {}).setdefault(case.pop("op"), []).append(case)
    for device, ops in fresh.items():
        table.setdefault(device, {}).update(ops)
        print(f"{device}: " + ", ".join(f"{op} ({len(cases)} cases)" for op, cases in sorted(ops.items())))
    TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
