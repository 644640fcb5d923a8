#!/usr/bin/env bash
# A new user's first hour, end to end: the README's commands on data/samples/, then the broken files real
# users bring (a stray quote, the input as output, a stale partial, mixed encodings, transcripts whose
# speakers are names, text piped in). Each step checks its exit code and, where rows come out, that there
# is exactly one output row per input row. Prints one line per check; exits 1 if any check failed.
#
#   scripts/new_user_walkthrough.sh [WORKDIR]        (default: a fresh temporary directory)
#   EMOTAG="python -m emotag.cli" PYTHON=python scripts/new_user_walkthrough.sh
#
# Uses the bundled model unless EMOTAG_MODEL names another. `report` needs the `report` extra.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAMPLES="$ROOT/data/samples"
if [ -x "$ROOT/.venv/bin/python" ]; then DEFAULT_PY="$ROOT/.venv/bin/python"; else DEFAULT_PY=python3; fi
PYTHON=${PYTHON:-$DEFAULT_PY}
read -r -a EMOTAG <<< "${EMOTAG:-$PYTHON -m emotag.cli}"
MODEL=()
[ -n "${EMOTAG_MODEL:-}" ] && MODEL=(--model "$EMOTAG_MODEL")
W=${1:-$(mktemp -d)}
mkdir -p "$W"
export EMOTAG_PSEUDONYM_KEY=${EMOTAG_PSEUDONYM_KEY:-walkthrough-key-0123456789abcdef}
failed=0

pass() { echo "ok    $1"; }
fail() { echo "FAIL  $1" >&2; failed=1; }

# run NAME WANT_EXIT [MUST_CONTAIN] -- emotag args...   (stderr goes to $W/NAME.err)
run() {
    local name=$1 want=$2 text=$3
    shift 4
    "${EMOTAG[@]}" "$@" > "$W/$name.out" 2> "$W/$name.err"
    local got=$?
    if [ "$got" != "$want" ]; then
        fail "$name: exit $got, expected $want: $(tail -n 2 "$W/$name.err" | tr '\n' ' ')"
        return 1
    fi
    if [ -n "$text" ] && ! grep -qF -- "$text" "$W/$name.err"; then
        fail "$name: stderr lacks '$text': $(tail -n 2 "$W/$name.err" | tr '\n' ' ')"
        return 1
    fi
    pass "$name (exit $got)"
}

# rows FILE: records in a jsonl/csv/... file, read back the way emotag reads them
rows() { "$PYTHON" -c 'import sys; from emotag.io import read_records; print(sum(1 for _ in read_records(sys.argv[1])))' "$1"; }
input_rows() { "$PYTHON" -c 'import sys; from emotag.io import read_rows; print(sum(1 for _ in read_rows(sys.argv[1])))' "$1"; }
same_rows() {  # NAME OUTPUT EXPECTED
    local got
    got=$(rows "$2")
    if [ "$got" = "$3" ]; then pass "$1: $got rows out"; else fail "$1: $got rows out, expected $3"; fi
}
errors_in() { "$PYTHON" -c 'import sys; from emotag.io import read_records; print(sum(1 for r in read_records(sys.argv[1]) if r.get("error")))' "$1"; }

echo "walkthrough in $W"

# ------------------------------------------------------------------ the README's commands on data/samples
run info 0 "" -- info "${MODEL[@]}"
run reviews 0 "from 108 lines" -- score "$SAMPLES/reviews.csv" -o "$W/reviews.jsonl" --keep user_id,time,product,text "${MODEL[@]}"
same_rows reviews "$W/reviews.jsonl" "$(input_rows "$SAMPLES/reviews.csv")"
run posts 0 "" -- score "$SAMPLES/posts.jsonl" -o "$W/posts.parquet" --keep user_id,time,text "${MODEL[@]}"
same_rows posts "$W/posts.parquet" "$(grep -c . "$SAMPLES/posts.jsonl")"
run dialogues 0 "" -- score-dialogues "$SAMPLES/conversations.jsonl" -o "$W/conversations.jsonl" "${MODEL[@]}"
same_rows dialogues "$W/conversations.jsonl" "$(grep -c . "$SAMPLES/conversations.jsonl")"
run profile 0 "" -- profile "$W/reviews.jsonl" "$W/posts.parquet" "$W/conversations.jsonl" \
    --channels review,social,support -o "$W/profiles.jsonl" --store "$W/profiles.db"
if "$PYTHON" -c "import matplotlib" 2>/dev/null; then
    run report 0 "wrote" -- report "$W/reviews.jsonl" "$W/posts.parquet" "$W/conversations.jsonl" \
        --profiles "$W/profiles.db" -o "$W/report.html"
else
    run report-needs-matplotlib 1 "matplotlib" -- report "$W/reviews.jsonl" -o "$W/report.html"
fi

# ------------------------------------------------------------------------------------- broken files
# 1. the output is the input, under another name: refused, input untouched
cp "$SAMPLES/posts.jsonl" "$W/s.jsonl"
ln -sf "$W/s.jsonl" "$W/alias.jsonl"
before=$(cksum < "$W/s.jsonl")
run same-path 1 "is the input file" -- score "$W/s.jsonl" -o "$W/s.jsonl" "${MODEL[@]}"
run same-via-symlink 1 "is the input file" -- score "$W/s.jsonl" -o "$W/alias.jsonl" "${MODEL[@]}"
[ "$(cksum < "$W/s.jsonl")" = "$before" ] && pass "input untouched" || fail "the input was changed"

# 2. a CSV cell that opens a quote it never closes (row 11 of 1,000)
"$PYTHON" - "$W/stray.csv" <<'EOF'
import sys
rows = ["id,text"] + [f"{i},第{i}条很好吃" for i in range(1, 1001)]
rows[11] = '11,"好评有点少'
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(rows) + "\n")
EOF
run stray-quote 0 "1000 rows from 1001 lines" -- score "$W/stray.csv" -o "$W/stray.jsonl" "${MODEL[@]}"
same_rows stray-quote "$W/stray.jsonl" 1000

# 3. --resume with a partial that is not this run's
cp "$W/stray.jsonl" "$W/resumed.jsonl.partial"
run resume-unknown-partial 1 "cannot resume" -- score "$W/s.jsonl" -o "$W/resumed.jsonl" --resume "${MODEL[@]}"
[ ! -e "$W/resumed.jsonl" ] && pass "no output from a refused resume" || fail "a refused resume wrote output"

# 4. mostly GBK with a few UTF-8 rows
"$PYTHON" - "$W/mixed.csv" <<'EOF'
import sys
data = b"id,text\n"
for i in range(300):
    data += f"{i},第{i}条评论，质量很好\n".encode("utf-8" if i in (50, 51, 200) else "gbk")
open(sys.argv[1], "wb").write(data)
EOF
run mixed-encoding 0 "300 rows" -- score "$W/mixed.csv" -o "$W/mixed.jsonl" "${MODEL[@]}"
[ "$(errors_in "$W/mixed.jsonl")" = 0 ] && pass "mixed-encoding: every row read" || fail "mixed-encoding: rows with errors"

# 5. a TV-script transcript: speakers are names
"$PYTHON" - "$W/script.csv" <<'EOF'
import sys
rows = ["conversation_id,speaker,text", "d1,于春晓,怎么了", "d1,戴娜,撞你个头", "d1,于春晓,没事就好",
        "d2,戴娜,我这堵着车", "d2,于春晓,真烦人"]
open(sys.argv[1], "w", encoding="utf-8").write("\n".join(rows) + "\n")
EOF
run named-speakers 1 "--customer" -- score-dialogues "$W/script.csv" -o "$W/script.jsonl" "${MODEL[@]}"
run named-speakers-agent 0 "" -- score-dialogues "$W/script.csv" -o "$W/script.jsonl" --agent 戴娜 "${MODEL[@]}"
same_rows named-speakers-agent "$W/script.jsonl" 2

# 6. text piped in, one per line; a .txt file
printf '很好吃\n太难吃了\n还行吧\n' | "${EMOTAG[@]}" score - "${MODEL[@]}" > "$W/piped.jsonl" 2> "$W/piped.err"
[ $? = 0 ] && [ "$(rows "$W/piped.jsonl")" = 3 ] && pass "piped text: 3 rows" || fail "piped text"
printf '很好吃\n太难吃了\n' > "$W/notes.txt"
run txt 0 "" -- score "$W/notes.txt" -o "$W/notes.csv" "${MODEL[@]}"
same_rows txt "$W/notes.csv" 2

# 7. the text column is called review
printf 'id,review\n1,这家外卖很好吃\n2,太难吃了\n' > "$W/review.csv"
run keep-text-wrong-name 1 "--keep review" -- score "$W/review.csv" --text-col review --keep text -o "$W/review.jsonl" "${MODEL[@]}"
run keep-text-own-name 0 "" -- score "$W/review.csv" --text-col review --keep review -o "$W/review.jsonl" "${MODEL[@]}"

# 8. files that are not data
: > "$W/empty.csv"
run empty-file 1 "empty" -- score "$W/empty.csv" -o "$W/x.jsonl" "${MODEL[@]}"
run missing-column 1 "column 'body' is missing" -- score "$SAMPLES/reviews.csv" --text-col body -o "$W/x.jsonl" "${MODEL[@]}"
run directory 1 "directory" -- score "$W" -o "$W/x.jsonl" "${MODEL[@]}"
head -c 2000 /dev/urandom > "$W/garbage.csv"
if run garbage 1 "" -- score "$W/garbage.csv" -o "$W/x.jsonl" "${MODEL[@]}"; then
    [ "$(wc -l < "$W/garbage.err")" = 1 ] && pass "garbage: one line" || fail "garbage: $(head -c 300 "$W/garbage.err")"
fi

if [ "$failed" = 0 ]; then echo "walkthrough: all checks passed"; else echo "walkthrough: some checks FAILED" >&2; fi
exit "$failed"
