//! Workflow generation: `codeb-workflow-gen`'s library rendering every variant of the proof
//! matrix (each type × database/redis × environment set), from loading the embedded template
//! set (Tera parse + types.toml + pins.toml) to the last file's header hash. Budget: the whole
//! matrix in under 50 ms. Peer: the same matrix with the template set loaded once and reused,
//! which isolates what loading costs.

use codeb_workflow_gen::{ProjectName, TemplateSet, render, variant_matrix};
use std::time::{Duration, Instant};

/// The budget of the issue: the whole matrix, loading included.
const BUDGET: Duration = Duration::from_millis(50);

fn median_p90(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or_default()
    };
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Renders the matrix `runs` times both ways (interleaved) and prints the figures.
pub fn run(runs: usize) -> Result<(), String> {
    let project = ProjectName::new("myapp").map_err(|e| e.to_string())?;
    let runs = runs.clamp(5, 200);
    let loaded = TemplateSet::embedded().map_err(|e| e.to_string())?;
    let matrix = variant_matrix(&loaded, &project);
    let mut cold = Vec::with_capacity(runs);
    let mut warm = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let set = TemplateSet::embedded().map_err(|e| e.to_string())?;
        for o in &matrix {
            bytes += render(o, &set).map_err(|e| e.to_string())?.len();
        }
        cold.push(t.elapsed());
        let t = Instant::now();
        for o in &matrix {
            bytes += render(o, &loaded).map_err(|e| e.to_string())?.len();
        }
        warm.push(t.elapsed());
    }
    let (cold_med, cold_p90) = median_p90(cold);
    let (warm_med, warm_p90) = median_p90(warm);
    println!(
        "\n## codeb-workflow-gen: the whole variant matrix ({} workflows, {runs} runs each, interleaved)\n",
        matrix.len()
    );
    println!("| what | median | p90 | per workflow |\n|---|---|---|---|");
    let per = |d: Duration| ms(d / u32::try_from(matrix.len()).unwrap_or(1));
    println!(
        "| load templates + render all | {} | {} | {} |",
        ms(cold_med),
        ms(cold_p90),
        per(cold_med)
    );
    println!(
        "| render all, templates loaded once (peer) | {} | {} | {} |",
        ms(warm_med),
        ms(warm_p90),
        per(warm_med)
    );
    let verdict = if cold_p90 < BUDGET { "within" } else { "OVER" };
    println!(
        "\nbudget {}: p90 {} is {verdict} budget ({} bytes rendered in total)",
        ms(BUDGET),
        ms(cold_p90),
        bytes
    );
    if cold_p90 < BUDGET {
        Ok(())
    } else {
        Err(format!(
            "rendering the workflow matrix took {} (p90), over the {} budget",
            ms(cold_p90),
            ms(BUDGET)
        ))
    }
}
