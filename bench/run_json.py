"""Runs one of our benchmark commands and reads the JSON object it prints last (shared by the bench scripts)."""
import json
import subprocess
import sys
import time


def run_json(cmd, env=None):
    """Runs `cmd`; exits with its stderr when it fails or prints no JSON object. Returns (object, wall seconds)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {p.returncode}")
    lines = [l for l in p.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"`{' '.join(cmd)}` printed no JSON object:\n{p.stdout}")
    return json.loads(lines[-1]), wall
