//! The route table, read once from the OpenAPI spec: what the metrics call each route and
//! which methods a path takes (the `Allow` header of a 405).
//!
//! The spec is the one source: poem-openapi registers `/api/billing/events/{event_id}` in the
//! router as `/api/billing/events/:param0` (the `n`th path variable is `:param<n>`), and the
//! router reports that pattern on each answer. This module only maps names; it never routes.

use std::collections::HashMap;

/// Every operation's path and methods.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Router pattern (`/api/billing/events/:param0`) to spec path (`.../{event_id}`).
    templates: HashMap<String, String>,
    /// Spec path split on `/`, with its methods in upper case (`GET`, `POST`).
    methods: Vec<(Vec<String>, Vec<String>)>,
}

impl RouteTable {
    /// Reads the table from the spec's JSON (`OpenApiService::spec`).
    pub fn from_spec(spec_json: &str) -> RouteTable {
        let spec: serde_json::Value = serde_json::from_str(spec_json).expect("the spec is JSON");
        let paths = spec["paths"].as_object().cloned().unwrap_or_default();
        let mut table = RouteTable::default();
        for (template, operations) in paths {
            let segments: Vec<String> = template.split('/').map(str::to_owned).collect();
            let mut n = 0;
            let pattern = segments
                .iter()
                .map(|segment| match is_variable(segment) {
                    true => {
                        n += 1;
                        format!(":param{}", n - 1)
                    }
                    false => segment.clone(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let methods = operations
                .as_object()
                .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            table.templates.insert(pattern, template.clone());
            table.methods.push((segments, methods));
        }
        table
    }

    /// The spec's path for a router pattern; the pattern itself for routes outside the spec
    /// (`/docs`, `/openapi.yaml`).
    pub fn template<'a>(&'a self, pattern: &'a str) -> &'a str {
        self.templates.get(pattern).map_or(pattern, String::as_str)
    }

    /// The methods `path` (a request's path) takes, comma-separated, as `Allow` lists them;
    /// `None` when no operation has that path.
    pub fn allowed(&self, path: &str) -> Option<String> {
        let requested: Vec<&str> = path.split('/').collect();
        let mut allowed: Vec<&str> = self
            .methods
            .iter()
            .filter(|(segments, _)| {
                segments.len() == requested.len()
                    && segments
                        .iter()
                        .zip(&requested)
                        .all(|(s, r)| s == r || (is_variable(s) && !r.is_empty()))
            })
            .flat_map(|(_, methods)| methods.iter().map(String::as_str))
            .collect();
        allowed.sort_unstable();
        allowed.dedup();
        (!allowed.is_empty()).then(|| allowed.join(", "))
    }
}

fn is_variable(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::RouteTable;

    #[test]
    fn patterns_map_to_spec_paths_and_paths_to_methods() {
        let spec = r#"{"paths": {
            "/api/billing/events/{event_id}": {"get": {}},
            "/api/billing/webhook": {"post": {}},
            "/api/billing/a/{x}/b/{y}": {"get": {}, "delete": {}}}}"#;
        let table = RouteTable::from_spec(spec);
        assert_eq!(
            table.template("/api/billing/events/:param0"),
            "/api/billing/events/{event_id}"
        );
        assert_eq!(
            table.template("/a/:param1/b/:param0"),
            "/a/:param1/b/:param0"
        );
        assert_eq!(
            table.allowed("/api/billing/webhook").as_deref(),
            Some("POST")
        );
        assert_eq!(
            table.allowed("/api/billing/a/1/b/2").as_deref(),
            Some("DELETE, GET")
        );
        assert_eq!(table.allowed("/api/billing/events/"), None);
        assert_eq!(table.allowed("/nowhere"), None);
    }
}
