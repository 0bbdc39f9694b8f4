# Tasks for the proxy conformance suite. `just --list` shows them.

# Install the pinned proxies (scripts/proxies.tsv) and just itself, where missing.
setup *ARGS:
    bash scripts/setup.sh {{ARGS}}
