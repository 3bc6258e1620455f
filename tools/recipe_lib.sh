#!/usr/bin/env bash
# Helpers shared by every recipe's run.sh (source it after parse_options.sh):
#   log "Stage 3: ..."                 timestamped line (`auden-kit recipe ls` reads "Stage N: title")
#   up_to_date OUT IN...               true when OUT exists and is newer than every existing IN, so a
#                                      rerun skips finished work and redoes it when an input changed
export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin:$PATH"

log() { echo "$(date '+%H:%M:%S') $*"; }

up_to_date() {
  local out="$1"; shift
  [ -e "$out" ] || return 1
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    [ "$f" -nt "$out" ] && return 1
  done
  return 0
}

skip() { log "  up to date: $*"; }
