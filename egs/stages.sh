# Shared helpers of egs/*/run.sh: stage selection and a dry-run mode. Sourced, not run.
#   --stage N        first stage to run (default 0)
#   --stop-stage N   last stage to run (default 100)
#   --dry-run        print the commands of each selected stage instead of running them
#   --exp DIR        experiment directory (default exp/<recipe set>)
# The scripts call only the public `cmaudio` command line.
stage=0
stop_stage=100
dry_run=0
parse_stage_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --stage) stage="$2"; shift 2 ;;
      --stop-stage) stop_stage="$2"; shift 2 ;;
      --dry-run) dry_run=1; shift ;;
      --exp) exp="$2"; shift 2 ;;
      --data) data="$2"; shift 2 ;;
      -h|--help) sed -n '2,/^$/p' "$0"; exit 0 ;;
      *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
  done
}
# in_stage N TITLE: true when stage N is selected; prints a banner
in_stage() {
  if [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; then
    echo "=== stage $1: $2" >&2
    return 0
  fi
  return 1
}
# run CMD...: execute (or print under --dry-run)
run() {
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}
