#!/usr/bin/env bash
# A terminal recording of `hf-unlearn run` (the offline demo) as text, for docs/cli_recording.txt: the demo runs in a
# 120x32 tmux pane, captured every 2 s; the first screen of each progress bar's phase is kept, then the whole session.
#   bash bench/record_cli.sh > docs/cli_recording.txt
set -euo pipefail
out=$(mktemp -d)
session=hf-unlearn-recording-$$
tmux new-session -d -s "$session" -x 120 -y 32 \
  "echo '$ hf-unlearn run'; .venv/bin/hf-unlearn run --output-dir $out/run; tmux wait-for -S $session; sleep 60"
( tmux wait-for "$session"; touch "$out/done" ) &
frame=0
while [ ! -e "$out/done" ]; do
  sleep 2
  frame=$((frame + 1))
  tmux capture-pane -p -t "$session" > "$out/frame$frame.txt"
done
echo "# \`hf-unlearn run\` in a 120x32 terminal (tmux), $(date -u +%Y-%m-%d), $(nproc) CPU cores; bench/record_cli.sh"
python3 - "$out" <<'PY'
import pathlib, re, sys
frames = sorted(pathlib.Path(sys.argv[1]).glob("frame*.txt"), key=lambda p: int(p.stem[5:]))
seen = set()
for path in frames:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    bars = [m.group(1) for line in lines if (m := re.match(r"^(.+?):\s+\d+%\|", line))]
    if bars and bars[-1] not in seen:  # the first screen of each phase's bar
        seen.add(bars[-1])
        print(f"\n## screen at {2 * int(path.stem[5:])} s: {bars[-1]}")
        print("\n".join(lines[-6:]))
PY
echo; echo "## the whole session once it ended"
tmux capture-pane -p -S - -t "$session" | grep -v '^\s*$'
tmux kill-session -t "$session"
rm -rf "$out"
