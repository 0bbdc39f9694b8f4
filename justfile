# Tasks for the proxy conformance suite. `just --list` shows them.

# Install the pinned proxies (scripts/proxies.tsv) and just itself, where missing.
setup *ARGS:
    bash scripts/setup.sh {{ARGS}}

# Every test: the mock, the runner against every available proxy, every check against every
# proxy x config x profile with snapshots. Installs what is missing first.
test: setup
    cargo test --workspace

# Run the whole compatibility matrix and write results/ (matrix.json, matrix.md, index.html, performance.md).
# Flags pass through: --junit FILE, --shard K/N --out DIR (one slice per machine), --full-evidence.
matrix IDLE="75" *FLAGS: setup
    cargo run --release -p suite -- matrix --idle {{IDLE}} {{FLAGS}}

# Join the output folders of `just matrix 75 --shard K/N --out DIR` into results/ (or --out DIR).
merge +DIRS:
    cargo run --release -p suite -- merge {{DIRS}}

# Check your own config: just check nginx path/to/site.conf [extra flags, e.g. --profile bare --only sse.stream]
check PROXY CONFIG *FLAGS:
    cargo run --release -p suite -- check --proxy {{PROXY}} --config {{CONFIG}} {{FLAGS}}

# Run the mock backend alone (openchamber profile on 127.0.0.1:3000 unless told otherwise).
mock *FLAGS:
    cargo run --release -p mock-server -- {{FLAGS}}

# Benchmark the mock itself; writes results/bench-mock.md.
bench-mock:
    cargo bench -p mock-server --bench mock
