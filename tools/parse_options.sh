#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts: source it after defining defaults.
#   stage=0; stop_stage=100; dl_dir=download
#   . ../../tools/parse_options.sh
#   ./run.sh --stage 2 --stop-stage 4 --dl-dir /data
# Each --foo-bar VALUE sets the existing variable foo_bar; an unknown option is an error.
# --help prints $help_message (if the script defines one) and the variables it accepts.
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      [ -n "${help_message:-}" ] && printf '%s\n' "$help_message"
      echo "Options (current values):"
      for v in ${__options:-}; do printf '  --%s %s\n' "${v//_/-}" "${!v}"; done
      exit 0 ;;
    --*=*)
      name="${1%%=*}"; value="${1#*=}" ;;
    --*)
      name="$1"
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 2; fi
      value="$2"; shift ;;
    *) echo "$0: unexpected argument '$1' (options look like --stage 2)" >&2; exit 2 ;;
  esac
  var="${name#--}"; var="${var//-/_}"
  if [ -z "${!var+x}" ]; then
    echo "$0: unknown option $name (see $0 --help)" >&2; exit 2
  fi
  printf -v "$var" '%s' "$value"
  shift
done
true
