#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (generated, git-ignored) with seed inputs:
#   - the hand-written and generated seeds committed in fuzz/seeds/<target>/;
#   - the public test data in ../shared/corpus (beside the repository; override with
#     VERITRAIL_SHARED_CORPUS): Kubernetes audit logs and CloudTrail records one line per seed
#     (plus a few lines wrapped into an EventList / a Records file), whole CloudTrail files, the
#     detection fixtures, and the Merkle proof vectors one case per seed.
# Safe to run again: file names are derived from the source, so a rerun rewrites the same files
# (libFuzzer's own additions to the corpus are left alone).
# Needs only coreutils; the shared corpus is optional (without it only the committed seeds are used).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${VERITRAIL_SHARED_CORPUS:-$ROOT/../shared/corpus}"
SHARED="$(cd "$SHARED" 2>/dev/null && pwd || printf '%s' "$SHARED")"
cd "$ROOT/fuzz"
TARGETS=(event_json k8s_event_list cloudtrail bundle proofs signed_note segment_record content_coding stored_files lifecycle_json)

for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then
    cp -f seeds/"$t"/* "corpus/$t/"
  fi
done

# One seed per non-empty line of $1, into corpus/$2, named <file name>-<line number>.
lines() {
  local src="$1" target="$2" base n=0 line
  base="$(basename "$src")"
  base="${base%.*}"
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    [ -n "${line//[[:space:]]/}" ] || continue
    printf '%s\n' "$line" > "corpus/$target/$base-$n.json"
  done < "$src"
}

# The first $3 non-empty lines of $1 as one JSON document: $4 before them (comma-separated), $5 after.
wrap() {
  local src="$1" out="$2" count="$3" head="$4" tail="$5"
  { printf '%s' "$head"; awk -v n="$count" 'NF { print; if (++c == n) exit }' "$src" | paste -sd, - | tr -d '\n'; printf '%s\n' "$tail"; } > "$out"
}

if [ ! -d "$SHARED" ]; then
  echo "seed.sh: $SHARED is missing; only the committed seeds are used" >&2
else
  k8s="$SHARED/kubernetes-audit"
  list_head='{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":['
  for f in "$k8s"/*.log "$k8s"/*.jsonl; do
    [ -f "$f" ] || continue
    lines "$f" k8s_event_list
    name="$(basename "${f%.*}")"
    wrap "$f" "corpus/k8s_event_list/list-$name-3.json" 3 "$list_head" ']}'
    wrap "$f" "corpus/k8s_event_list/list-$name-12.json" 12 "$list_head" ']}'
  done
  [ -f "$k8s/falco-malformed-event.json" ] && cp -f "$k8s/falco-malformed-event.json" corpus/k8s_event_list/
  # EKS audit events and GCP AuditLog entries (GKE's wrapper) as the detection rules see them.
  for f in "$SHARED"/detection-fixtures/panther_eks_k8s_audit_tests.jsonl \
           "$SHARED"/detection-fixtures/panther_gcp_auditlog_tests.jsonl; do
    [ -f "$f" ] && lines "$f" k8s_event_list
  done

  ct="$SHARED/cloudtrail"
  for f in "$ct"/*.json; do
    [ -f "$f" ] && cp -f "$f" corpus/cloudtrail/
  done
  for f in "$ct"/*.jsonl; do
    [ -f "$f" ] || continue
    lines "$f" cloudtrail
    wrap "$f" "corpus/cloudtrail/records-$(basename "${f%.*}")-5.json" 5 '{"Records":[' ']}'
  done
  f="$SHARED/detection-fixtures/panther_aws_cloudtrail_tests.jsonl"
  [ -f "$f" ] && lines "$f" cloudtrail

  # The proof vectors: <kind>/<case>/<name>.json → <kind>__<case>__<name>.json
  mv_dir="$SHARED/merkle-vectors"
  if [ -d "$mv_dir" ]; then
    while IFS= read -r -d '' f; do
      rel="${f#"$mv_dir"/}"
      cp -f "$f" "corpus/proofs/${rel//\//__}"
    done < <(find "$mv_dir" -type f -name '*.json' -print0)
  fi
fi

for t in "${TARGETS[@]}"; do
  printf '%-16s %5d seeds\n' "$t" "$(find "corpus/$t" -type f | wc -l)"
done
