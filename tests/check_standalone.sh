#!/usr/bin/env bash
# check_standalone.sh -- the project stands alone: nothing in it refers to
# files outside the repository.
#
# 1. No tracked file names a path outside the tree: ../shared, /work/...,
#    a notes/ folder or a DESIGN.md that the repository does not have.
#    What users need is in README.md and docs/.
# 2. Every relative link in a tracked Markdown file ([text](path)) points
#    at a file or folder inside the repository that exists.
# Controls: a file with such a reference, and a Markdown file with a
# broken link, must be caught by the same checks.
set -u
cd "$(dirname "$0")/.."
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The tracked files (a checkout without git: every file outside build trees).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files >"$tmp/files"
else
    find . -type f -not -path './.git/*' -not -path './build*' | sed 's|^\./||' >"$tmp/files"
fi
grep -vx 'tests/check_standalone.sh' "$tmp/files" >"$tmp/scan"

# Paths that lead out of the repository.
OUTSIDE='\.\./shared|/work/|shared/notes|(^|[^/[:alnum:]_])notes/[a-z_]+\.md|DESIGN\.md'

outside_refs() { # file list -> "file:line: text" for every reference outside
    while IFS= read -r f; do
        [ -f "$f" ] && grep -InE "$OUTSIDE" "$f" /dev/null
    done
}

# Relative Markdown links that do not resolve inside the repository.
broken_links() { # root, file list
    local root=$1 f dir target path
    while IFS= read -r f; do
        case "$f" in *.md) ;; *) continue ;; esac
        dir=$(dirname "$f")
        # links outside code: fenced blocks and `inline code` are skipped
        awk '/^[[:space:]]*```/ { code = !code; next } !code' "$root/$f" | sed -E 's/`[^`]*`//g' |
            grep -oE '\]\([^)[:space:]]+\)' | sed -E 's/^\]\(//; s/\)$//' | while IFS= read -r target; do
            case "$target" in http://*|https://*|mailto:*|'#'*) continue ;; esac
            path=${target%%#*}
            # resolved against the file's folder; must stay inside the root
            resolved=$(realpath -m "$root/$dir/$path")
            case "$resolved" in "$(realpath "$root")"/*|"$(realpath "$root")") ;; *)
                echo "$f: $target leads outside the repository"; continue ;; esac
            [ -e "$resolved" ] || echo "$f: $target does not exist"
        done
    done
}

found=$(outside_refs <"$tmp/scan")
if [ -z "$found" ]; then ok "no tracked file refers outside the repository ($(wc -l <"$tmp/scan") files)"
else bad "references outside the repository:"; echo "$found" | head -n 20 | sed 's/^/    /'; fi

links=$(broken_links . <"$tmp/files")
if [ -z "$links" ]; then ok "every relative link in the Markdown files resolves inside the repository"
else bad "broken or outside links:"; echo "$links" | head -n 20 | sed 's/^/    /'; fi

# Controls
mkdir -p "$tmp/ctl/docs"
printf 'see ../shared/notes/losses.md\n' >"$tmp/ctl/a.c"
printf '# x\n[ok](../README.md) [gone](missing.md) [out](../../../etc/passwd) [web](https://example.org)\n%s\n%s\n%s\n' \
    '`a[0](x)` in code' '```' 'layers[-1](x)' >"$tmp/ctl/docs/b.md"
printf '```\n' >>"$tmp/ctl/docs/b.md"
printf 'README.md\n' >"$tmp/ctl/README.md"
n=$(printf '%s\n' "$tmp/ctl/a.c" | outside_refs | wc -l)
[ "$n" = 1 ] && ok "control: a reference to ../shared is caught" || bad "control: ../shared not caught ($n)"
n=$( (cd "$tmp/ctl" && printf 'docs/b.md\n' | broken_links .) | wc -l)
[ "$n" = 2 ] && ok "control: a missing target and a link out of the tree are caught, good links pass" ||
    bad "control: the link check found $n problems in a file with 2"

echo "check_standalone: $passed passed, $failed failed"
[ "$failed" = 0 ]
