//! Filter flags shared by `query` and `export`; they mirror the API's query parameters.

use clap::Args;

/// Event filters. Each flag is the query parameter of the same name.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Event type, exact or prefix (`iam.*`).
    #[arg(long, short = 't', visible_alias = "type")]
    pub event_type: Option<String>,
    #[arg(long, visible_alias = "category")]
    pub event_category: Option<String>,
    #[arg(long, visible_alias = "action")]
    pub event_action: Option<String>,
    /// success, failure or pending.
    #[arg(long, visible_alias = "outcome")]
    pub event_outcome: Option<String>,
    #[arg(long)]
    pub actor_type: Option<String>,
    #[arg(long, short = 'a', visible_alias = "actor")]
    pub actor_id: Option<String>,
    #[arg(long)]
    pub resource_type: Option<String>,
    #[arg(long, short = 'r', visible_alias = "resource")]
    pub resource_id: Option<String>,
    #[arg(long, short = 'c', visible_alias = "correlation")]
    pub correlation_id: Option<String>,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long)]
    pub cluster_id: Option<String>,
    #[arg(long)]
    pub severity: Option<String>,
    #[arg(long, visible_alias = "producer")]
    pub producer_id: Option<String>,
    /// RFC 3339 time, a date, or an age such as 30m, 24h, 7d.
    #[arg(long, short = 's')]
    pub since: Option<String>,
    /// Same forms as --since; exclusive.
    #[arg(long, short = 'u')]
    pub until: Option<String>,
    /// `KEY=VALUE` condition on event_data (dotted keys reach nested objects); repeatable.
    #[arg(long = "data", value_name = "KEY=VALUE")]
    pub data: Vec<String>,
}

impl FilterArgs {
    /// The filters as query parameters.
    pub fn to_params(&self) -> anyhow::Result<Vec<(String, String)>> {
        let fields = [
            ("event_type", &self.event_type),
            ("event_category", &self.event_category),
            ("event_action", &self.event_action),
            ("event_outcome", &self.event_outcome),
            ("actor_type", &self.actor_type),
            ("actor_id", &self.actor_id),
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("correlation_id", &self.correlation_id),
            ("namespace", &self.namespace),
            ("cluster_id", &self.cluster_id),
            ("severity", &self.severity),
            ("producer_id", &self.producer_id),
            ("since", &self.since),
            ("until", &self.until),
        ];
        let mut out: Vec<(String, String)> = fields
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
            .collect();
        for d in &self.data {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--data expects KEY=VALUE, got `{d}`"))?;
            out.push((format!("data.{k}"), v.to_string()));
        }
        Ok(out)
    }
}
