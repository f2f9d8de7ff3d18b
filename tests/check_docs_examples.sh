#!/usr/bin/env bash
# Checks the examples of a Markdown document against the compiler.
#
# An error example is a fenced block opened by ```yaml title=FILENAME, holding a model file,
# followed by a fenced ```text block holding exactly what `cnnc check FILENAME` prints on stderr.
# For each one this writes FILENAME into a scratch directory, runs `$CNNC check FILENAME` there,
# and fails unless the exit status is 1 and stderr is the text block. Finding no error example at
# all is a failure too. A plain ```yaml block whose first line starts with `name:` is a whole
# model: `cnnc check` must accept it (exit status 0).
#
# Usage: CNNC=build/cnnc bash tests/check_docs_examples.sh docs/dsl.md
set -euo pipefail

doc=${1:?usage: CNNC=path/to/cnnc $0 DOC.md}
: "${CNNC:?set CNNC to the cnnc executable}"
[[ -f $doc ]] || { echo "$doc: no such file" >&2; exit 1; }
[[ -x $CNNC ]] || { echo "CNNC=$CNNC is not an executable" >&2; exit 1; }
cnnc=$(cd "$(dirname "$CNNC")" && pwd)/$(basename "$CNNC")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Split the document into $scratch/N/FILENAME and $scratch/N/expected, one directory per example.
# A yaml block with a title must be followed (after blank lines only) by a text block.
count=0
valid=0
state=prose  # prose | model | after_model | expected | valid_first | valid
line_number=0
while IFS= read -r line || [[ -n $line ]]; do
  line_number=$((line_number + 1))
  case $state in
    prose)
      if [[ $line =~ ^\`\`\`yaml\ +title=([^[:space:]]+)[[:space:]]*$ ]]; then
        name=${BASH_REMATCH[1]}
        if [[ ! $name =~ ^[A-Za-z0-9_.-]+$ || $name == . || $name == .. ]]; then
          echo "$doc:$line_number: example file name '$name' must be a plain file name" >&2
          exit 1
        fi
        count=$((count + 1))
        example=$scratch/$count
        mkdir "$example"
        printf '%s:%s\n' "$name" "$line_number" > "$example/.source"
        : > "$example/$name"
        state=model
      elif [[ $line == '```yaml' ]]; then
        state=valid_first
      fi
      ;;
    valid_first)
      if [[ $line == name:* ]]; then
        valid=$((valid + 1))
        mkdir "$scratch/valid$valid"
        printf '%s\n' "$line_number" > "$scratch/valid$valid/.source"
        printf '%s\n' "$line" > "$scratch/valid$valid/model.yaml"
        state=valid
      elif [[ $line == '```' ]]; then
        state=prose
      else
        state=fragment
      fi
      ;;
    valid)
      if [[ $line == '```' ]]; then
        state=prose
      else
        printf '%s\n' "$line" >> "$scratch/valid$valid/model.yaml"
      fi
      ;;
    fragment)
      [[ $line == '```' ]] && state=prose
      ;;
    model)
      if [[ $line == '```' ]]; then
        state=after_model
      else
        printf '%s\n' "$line" >> "$example/$name"
      fi
      ;;
    after_model)
      if [[ $line == '```text' ]]; then
        : > "$example/.expected"
        state=expected
      elif [[ -n $line ]]; then
        echo "$doc:$line_number: expected a \`\`\`text block with the output of the example '$name'" >&2
        exit 1
      fi
      ;;
    expected)
      if [[ $line == '```' ]]; then
        state=prose
      else
        printf '%s\n' "$line" >> "$example/.expected"
      fi
      ;;
  esac
done < "$doc"
if [[ $state != prose ]]; then
  echo "$doc: the document ends inside the example '$name'" >&2
  exit 1
fi
if ((count == 0)); then
  echo "$doc: no examples found (expected \`\`\`yaml title=FILE blocks followed by \`\`\`text blocks)" >&2
  exit 1
fi

failures=0
for ((i = 1; i <= count; i++)); do
  example=$scratch/$i
  IFS=: read -r name source_line < "$example/.source"
  status=0
  (cd "$example" && "$cnnc" check "$name" > .stdout 2> .stderr) || status=$?
  if ((status != 1)); then
    echo "FAIL $doc:$source_line ($name): exit status $status, expected 1" >&2
    cat "$example/.stderr" >&2
    failures=$((failures + 1))
  elif ! diff -u --label expected --label "cnnc check $name" "$example/.expected" "$example/.stderr" >&2; then
    echo "FAIL $doc:$source_line ($name): stderr differs from the documented text (above)" >&2
    failures=$((failures + 1))
  else
    echo "ok   $doc:$source_line ($name)"
  fi
done

for ((i = 1; i <= valid; i++)); do
  example=$scratch/valid$i
  read -r source_line < "$example/.source"
  status=0
  (cd "$example" && "$cnnc" check model.yaml > .stdout 2> .stderr) || status=$?
  if ((status != 0)); then
    echo "FAIL $doc:$source_line (a model): cnnc check exits with $status, expected 0" >&2
    cat "$example/.stderr" >&2
    failures=$((failures + 1))
  else
    echo "ok   $doc:$source_line (a model)"
  fi
done

if ((failures > 0)); then
  echo "$failures of $((count + valid)) examples failed" >&2
  exit 1
fi
echo "all $count error examples and $valid models match"
