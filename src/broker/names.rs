//! The names of a deployment's exchanges and queues, all derived from its namespace.
//!
//! Kept apart from declaring them (`topology`) because nearly every part of the crate
//! needs a name (to publish, to consume, to browse a dead-letter queue, to route an
//! operator action) while only start-up code declares anything; and a name is pure,
//! so its format is a unit test. `docs/security.md` grants broker permissions by
//! these patterns: changing one is a change to operators' permission regexes.

use super::topology::DELAY_LEVELS_MS;

/// The names of one deployment's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    pub fn new(namespace: &str) -> Self {
        Names {
            ns: namespace.to_string(),
        }
    }
    pub fn namespace(&self) -> &str {
        &self.ns
    }
    pub fn start(&self) -> String {
        format!("{}.start", self.ns)
    }
    /// Alternate exchange of `start`: catches unknown saga names so the coordinator
    /// can dead-letter them with a reason.
    pub fn start_unrouted(&self) -> String {
        format!("{}.start.unrouted", self.ns)
    }
    pub fn tasks(&self) -> String {
        format!("{}.tasks", self.ns)
    }
    pub fn results(&self) -> String {
        format!("{}.results", self.ns)
    }
    pub fn signals(&self) -> String {
        format!("{}.signals", self.ns)
    }
    /// Operator actions (retry, skip, compensate, resume-at): an exchange of their
    /// own, so the credentials that may send signals cannot send them.
    pub fn operator(&self) -> String {
        format!("{}.operator", self.ns)
    }
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.ns)
    }
    pub fn coordinator_queue(&self) -> String {
        format!("{}.coordinator", self.ns)
    }
    pub fn task_queue(&self, activity: &str) -> String {
        format!("{}.task.{activity}", self.ns)
    }
    pub fn dlq(&self, activity: &str) -> String {
        format!("{}.dlq.{activity}", self.ns)
    }
    pub fn dlq_coordinator(&self) -> String {
        format!("{}.dlq.coordinator", self.ns)
    }
    pub fn delay(&self, level_ms: u64) -> String {
        format!("{}.delay.{level_ms}", self.ns)
    }
    /// The delay level an exchange name stands for, if it is one of ours.
    pub fn delay_level_of(&self, exchange: &str) -> Option<u64> {
        let ms: u64 = exchange
            .strip_prefix(&format!("{}.delay.", self.ns))?
            .parse()
            .ok()?;
        DELAY_LEVELS_MS.contains(&ms).then_some(ms)
    }
    /// Routing key on the DLX for an activity's dead letters.
    pub fn dlx_key_task(activity: &str) -> String {
        format!("task.{activity}")
    }
    pub const DLX_KEY_COORDINATOR: &'static str = "coordinator";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace() {
        let n = Names::new("ns1");
        assert_eq!(n.task_queue("payments.charge"), "ns1.task.payments.charge");
        assert_eq!(n.dlq("payments.charge"), "ns1.dlq.payments.charge");
        assert_eq!(n.dlq_coordinator(), "ns1.dlq.coordinator");
        assert_eq!(n.delay(1000), "ns1.delay.1000");
        assert_eq!(n.delay_level_of("ns1.delay.1000"), Some(1000));
        assert_eq!(n.delay_level_of("ns1.delay.1234"), None);
        assert_eq!(n.delay_level_of("ns2.delay.1000"), None);
        assert_eq!(n.delay_level_of("ns1.tasks"), None);
    }
}
