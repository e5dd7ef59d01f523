#!/usr/bin/env bash
# The GitHub Action's step (action.yml): reads the pull_request event GitHub wrote to
# $GITHUB_EVENT_PATH and creates, updates or closes its Offshoot branch deployment with the
# offshoot CLI. Inputs come as INPUT_* variables; OFFSHOOT_* and DAGSTER_CLOUD_* from the
# workflow's environment are the fallbacks. Writes `deployment-name` to $GITHUB_OUTPUT.
set -eu

[ -n "${INPUT_URL:-}" ] && export OFFSHOOT_URL="$INPUT_URL"
[ -n "${INPUT_API_TOKEN:-}" ] && export OFFSHOOT_API_TOKEN="$INPUT_API_TOKEN"
repository="${INPUT_REPOSITORY:-${GITHUB_REPOSITORY:?}}"
event="${GITHUB_EVENT_PATH:?the action runs on pull_request events}"

field() { jq -r "$1 // empty" "$event"; }
action=$(field .action)
branch=$(field .pull_request.head.ref)
sha=$(field .pull_request.head.sha)
number=$(field .pull_request.number)
url=$(field .pull_request.html_url)
if [ -z "$branch" ] || [ -z "$sha" ]; then
  echo "::error::not a pull_request event: $event has no pull_request.head" >&2
  exit 1
fi
# Pull requests from forks get no secrets; the webhook (deploy_forks) deploys them.
head_repository=$(field .pull_request.head.repo.full_name)
base_repository=$(field .pull_request.base.repo.full_name)
if [ -n "$head_repository" ] && [ "$head_repository" != "$base_repository" ]; then
  echo "::notice::pull request from the fork $head_repository: not deployed from CI"
  exit 0
fi

status=OPEN
if [ "$action" = closed ]; then
  if [ "$(jq -r '.pull_request.merged' "$event")" = true ]; then status=MERGED; else status=CLOSED; fi
fi
args=(branch-deployment create-or-update --git-repo-name "$repository" --branch-name "$branch"
      --commit-hash "$sha" --pull-request-status "$status")
[ -n "$number" ] && args+=(--pull-request-id "$number")
[ -n "$url" ] && args+=(--pull-request-url "$url")
[ -n "${INPUT_BASE_DEPLOYMENT_NAME:-}" ] && args+=(--base-deployment-name "$INPUT_BASE_DEPLOYMENT_NAME")
[ -n "${INPUT_SNAPSHOT_BASE_CONDITION:-}" ] && args+=(--snapshot-base-condition "$INPUT_SNAPSHOT_BASE_CONDITION")

name=$(offshoot "${args[@]}")
if [ "$status" != OPEN ]; then
  echo "Closed the branch deployment $name ($status)" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
  echo "deployment-name=" >> "${GITHUB_OUTPUT:-/dev/null}"
  exit 0
fi
echo "deployment-name=$name" >> "${GITHUB_OUTPUT:-/dev/null}"
echo "Branch deployment: $name" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
if [ "${INPUT_WAIT:-true}" = true ]; then
  # Fails the check when the definitions are invalid.
  offshoot deployment status "$name" --repository "$repository" --wait --timeout-secs "${INPUT_TIMEOUT_SECS:-600}"
fi
