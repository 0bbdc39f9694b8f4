//! `proxy-suite merge`: joins the `matrix.json` of several shards (`matrix --shard K/N`) into
//! one run, from which the same four reports are written as by a single run of the plan.
//!
//! Refuses what cannot be one matrix: different schemas or idle periods, a shard given twice,
//! shards of different counts, a run present in two inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::json::{self, Document};
use super::{Evidence, MatrixRun};

/// One input: where it came from and what it holds.
pub struct Input {
    pub path: PathBuf,
    pub doc: Document,
}

/// Reads `matrix.json` from a shard's output folder (or the file itself).
pub fn read(path: &Path) -> Result<Input, String> {
    let file = if path.is_dir() { path.join("matrix.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let doc = json::read_matrix(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Input { path: file, doc })
}

/// The merged run, how much evidence it keeps, and warnings that do not stop the merge (a
/// shard missing from the set).
pub struct Merged {
    pub run: MatrixRun,
    pub evidence: Evidence,
    pub warnings: Vec<String>,
}

/// Joins `inputs`, keeping full evidence only when `full` is asked and every input has it.
pub fn merge(mut inputs: Vec<Input>, full: bool) -> Result<Merged, String> {
    let Some(first) = inputs.first() else { return Err("nothing to merge".into()) };
    let (schema, idle_s) = (first.doc.schema, first.doc.run.idle_s);
    let name = |i: &Input| i.path.display().to_string();
    for i in &inputs[1..] {
        if i.doc.schema != schema {
            return Err(format!("{} is schema {}, {} is schema {schema}: rerun both with one proxy-suite", name(i), i.doc.schema, name(first)));
        }
        if i.doc.run.idle_s != idle_s {
            return Err(format!("{} ran with idle {} s, {} with {idle_s} s: not one matrix", name(i), i.doc.run.idle_s, name(first)));
        }
    }
    // Shard 1 first: its control is the one kept.
    inputs.sort_by_key(|i| i.doc.run.shard.map(|s| s.index).unwrap_or(0));
    let mut warnings = Vec::new();
    let shards: Vec<_> = inputs.iter().filter_map(|i| i.doc.run.shard.map(|s| (s, name(i)))).collect();
    if let Some((s, _)) = shards.first() {
        if let Some((other, path)) = shards.iter().find(|(o, _)| o.count != s.count) {
            return Err(format!("{path} is shard {other}, another input is shard {s}: shards of different plans"));
        }
        for pair in shards.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(format!("{} and {} are both shard {}: overlapping shards", pair[0].1, pair[1].1, pair[0].0));
            }
        }
        let missing: Vec<String> = (1..=s.count)
            .filter(|k| !shards.iter().any(|(o, _)| o.index == *k))
            .map(|k| format!("{k}/{}", s.count))
            .collect();
        if !missing.is_empty() {
            warnings.push(format!("shards {} not given: the merged matrix lacks their runs", missing.join(", ")));
        }
    }
    let mut seen: BTreeMap<(String, String, String, crate::tls::Transport, String), String> = BTreeMap::new();
    for i in &inputs {
        for r in &i.doc.run.runs {
            let key = (r.proxy.clone(), r.config.clone(), r.profile.to_string(), r.transport, r.runtime.clone());
            if let Some(other) = seen.insert(key, name(i)) {
                return Err(format!("{} {} {} {} ({}) is in both {other} and {}: overlapping shards", r.proxy, r.config, r.profile, r.transport, r.runtime, name(i)));
            }
        }
    }
    let all_full = inputs.iter().all(|i| i.doc.evidence == Evidence::Full);
    if full && !all_full {
        warnings.push("some inputs kept summary evidence only: the merge keeps summary evidence".into());
    }
    let evidence = if full && all_full { Evidence::Full } else { Evidence::Summary };
    let mut merged = inputs[0].doc.run.clone();
    merged.shard = None;
    merged.runs.clear();
    for i in &inputs {
        let run = &i.doc.run;
        merged.started_at = merged.started_at.clone().min(run.started_at.clone());
        merged.wall_ms = merged.wall_ms.max(run.wall_ms);
        for p in &run.proxies {
            match merged.proxies.iter_mut().find(|m| m.name == p.name) {
                // A proxy missing on one machine but run on another: the one that ran.
                Some(m) if m.version.is_none() && p.version.is_some() => *m = p.clone(),
                Some(_) => {}
                None => merged.proxies.push(p.clone()),
            }
        }
        for d in &run.direct {
            if !merged.direct.iter().any(|m| m.profile == d.profile) {
                merged.direct.push(d.clone());
            }
        }
        merged.runs.extend(run.runs.iter().cloned());
    }
    Ok(Merged { run: json::with_evidence(&merged, evidence), evidence, warnings })
}
