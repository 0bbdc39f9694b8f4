#!/usr/bin/env python3
"""Drafts `<config>.expected` files from a matrix.json: one line per non-pass grade, qualified by
proxy and profile only where the grade differs, with the reason taken from REASONS (a reason
must be written by a person: a grade without one is printed as TODO). Review before committing.

Usage: scripts/draft-expected.py results/matrix.json reasons.tsv
reasons.tsv: `<config-id>\t<check-id>\t<reason>` per line.
"""
import collections
import json
import sys

matrix = json.load(open(sys.argv[1]))
reasons = {}
for line in open(sys.argv[2]):
    if line.strip() and not line.startswith('#'):
        cfg, check, reason = line.rstrip('\n').split('\t', 2)
        reasons[(cfg, check)] = reason

runs = collections.defaultdict(list)
for r in matrix['runs']:
    runs[r['config']].append(r)

for cfg, rs in sorted(runs.items()):
    lines = []
    setup = [r for r in rs if r.get('setup_error')]
    if setup:
        kind = setup[0]['setup_error']['kind']
        lines.append(f"setup {kind} # {reasons.get((cfg, 'setup'), 'TODO')}")
    ok = [r for r in rs if not r.get('setup_error')]
    ids = []
    for r in ok:
        for c in r['checks']:
            if c['id'] not in ids:
                ids.append(c['id'])
    for cid in ids:
        grades = {(r['proxy']['name'], r['profile']): next((c['grade'] for c in r['checks'] if c['id'] == cid), None) for r in ok}
        nonpass = {k: g for k, g in grades.items() if g != 'pass'}
        if not nonpass:
            continue
        reason = reasons.get((cfg, cid), 'TODO')
        if len(nonpass) == len(grades) and len(set(nonpass.values())) == 1:
            lines.append(f"{cid} {next(iter(nonpass.values()))} # {reason}")
            continue
        proxies = {k[0] for k in grades}
        profiles = {k[1] for k in grades}
        # Qualify by whichever dimension explains the difference.
        for (proxy, profile), g in sorted(nonpass.items()):
            quals = []
            if len(proxies) > 1:
                quals.append(f"proxy={proxy}")
            if len(profiles) > 1:
                quals.append(f"profile={profile}")
            lines.append(f"{cid} {g} {' '.join(quals)} # {reason}".replace('  ', ' '))
    path = f"proxy-configs/{cfg}.expected"
    with open(path, 'w') as f:
        f.write("# Expected non-pass grades of this config, one per line with the reason (format: suite/src/expected.rs).\n")
        f.write("\n".join(lines) + ("\n" if lines else ""))
    todo = [l for l in lines if l.endswith('# TODO')]
    if todo:
        print(cfg, 'TODO:', *todo, sep='\n  ')
