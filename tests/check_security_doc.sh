#!/usr/bin/env bash
# check_security_doc.sh [SOURCE_DIR]: checks docs/SECURITY.md against the
# tests. Every test function the doc names must exist:
#
#  - in the last column of a table, each name is written `test_fn` (file.c):
#    test_fn must be defined as a function in tests/file.c and referenced
#    there again (registered in its main), else it never runs;
#  - every row of a "Bad inputs" table must name at least one test;
#  - any other `test_...` name in backticks in the doc must be defined as a
#    function in some tests/*.c.
#
# Prints one line per problem; exit 0 when none, 1 otherwise, 2 on usage.
set -u

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc=$root/docs/SECURITY.md
tests=$root/tests
[ -f "$doc" ] || { echo "check_security_doc: no $doc" >&2; exit 2; }
[ -d "$tests" ] || { echo "check_security_doc: no $tests" >&2; exit 2; }

fail=0
problem() {
	echo "docs/SECURITY.md: $*"
	fail=1
}

# What the tests define and reference: "file name" pairs, from one pass each.
declare -A defined refs
while read -r file name; do
	defined[$file:$name]=1
	defined[any:$name]=1
done < <(grep -oE '^(static[[:space:]]+)?(void|int)[[:space:]]+test_[A-Za-z0-9_]+[[:space:]]*\(' \
	"$tests"/*.c | sed -E 's#^.*/([^/:]+):(static[[:space:]]+)?(void|int)[[:space:]]+(test_[A-Za-z0-9_]+).*$#\1 \4#')
while read -r count key; do
	refs[$key]=$count
done < <(grep -owE 'test_[A-Za-z0-9_]+' "$tests"/*.c |
	sed -E 's|^.*/([^/:]+):|\1:|' | sort | uniq -c)

# One pass over the doc: "LINE NAME FILE" for each name in a table's last
# column (FILE "-" when missing), "LINE - NONE" for a bad-input row without
# a name, "LINE NAME TEXT" for a name in the prose.
refs_in_doc=$(awk '
	/^## Bad inputs/ { bad = 1 } /^## / && !/^## Bad inputs/ { bad = 0 }
	!/^\|/ {
		rest = $0
		while (match(rest, /`test_[A-Za-z0-9_]*`/)) {
			print NR, substr(rest, RSTART + 1, RLENGTH - 2), "TEXT"
			rest = substr(rest, RSTART + RLENGTH)
		}
		next
	}
	{
		row = $0; sub(/\|[[:space:]]*$/, "", row)
		n = split(row, cells, "|"); last = cells[n]
		if (last ~ /---/) next
		found = 0; rest = last
		while (match(rest, /`test_[A-Za-z0-9_]*`/)) {
			name = substr(rest, RSTART + 1, RLENGTH - 2)
			rest = substr(rest, RSTART + RLENGTH)
			file = "-"
			if (match(rest, /^ \(test_[A-Za-z0-9_]*\.c[,)]/))
				file = substr(rest, 3, RLENGTH - 3)
			print NR, name, file; found = 1
		}
		if (!found && bad && last !~ /^[[:space:]]*test[[:space:]]*$/)
			print NR, "-", "NONE"
	}' "$doc")

checked=0
while read -r line name file; do
	[ -n "$line" ] || continue
	case $file in
	NONE)
		problem "line $line: a bad-input row names no test"
		continue ;;
	TEXT)
		checked=$((checked + 1))
		[ -n "${defined[any:$name]:-}" ] ||
			problem "line $line: $name (in the text) is not a function of any tests/*.c"
		continue ;;
	-)
		checked=$((checked + 1))
		problem "line $line: \`$name\` is not followed by its file, e.g. (test_x.c)"
		continue ;;
	esac
	checked=$((checked + 1))
	if [ ! -f "$tests/$file" ]; then
		problem "line $line: $name: no file tests/$file"
	elif [ -z "${defined[$file:$name]:-}" ]; then
		problem "line $line: $name is not a function of tests/$file"
	elif [ "${refs[$file:$name]:-0}" -lt 2 ]; then
		problem "line $line: $name is defined in tests/$file but never registered"
	fi
done <<<"$refs_in_doc"

if [ $checked -eq 0 ]; then
	problem "no test names found: has the table format changed?"
fi
if [ $fail = 0 ]; then
	echo "docs/SECURITY.md: $checked test references, all defined"
fi
exit $fail
