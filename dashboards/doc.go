// Package dashboards will hold moat's Grafana dashboard JSON and provisioning
// files, and a test that checks every metric the dashboards query against the
// metrics the code really exports.
//
// It arrives with the "Observability" issue.
package dashboards
