//! Saga definitions as the command line loads them: every error reported at once, with
//! file, field and reason; and `sagaflow check`.

use crate::config::Settings;
use crate::saga::definition::{Catalog, DefinitionError};

/// Loads the definitions in `sagas_dir`, refusing any whose attempts could outlive the
/// broker's `consumer_timeout` (the broker would close the worker's channel).
pub fn load_catalog(settings: &Settings) -> anyhow::Result<Catalog> {
    let invalid = |errors: Vec<DefinitionError>| {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!(
            "invalid saga definitions in {}:\n{}",
            settings.sagas_dir.display(),
            lines.join("\n")
        )
    };
    let catalog = Catalog::load_dir(&settings.sagas_dir).map_err(invalid)?;
    let limit = std::time::Duration::from_millis(settings.queues.consumer_timeout_ms);
    let too_long = catalog.check_consumer_timeout(limit);
    if !too_long.is_empty() {
        return Err(invalid(too_long));
    }
    Ok(catalog)
}

/// `sagaflow check`: loads the definitions and prints each with its schedules.
pub fn check(settings: &Settings) -> anyhow::Result<()> {
    let catalog = load_catalog(settings)?;
    for d in catalog.iter() {
        println!(
            "{} v{}: {} steps, activities {:?}",
            d.name,
            d.version,
            d.steps.len(),
            d.activities()
        );
        for s in &d.schedules {
            println!(
                "  schedule {}.{}: cron `{}` in {}, overlap {}",
                d.name,
                s.name,
                s.cron,
                s.timezone,
                s.overlap.as_str()
            );
        }
    }
    Ok(())
}
