// Package dashboards holds moat's Grafana dashboards (overview.json,
// rules.json, dnsbl.json), the Prometheus alert rules shipped with them
// (alerts.yaml, with promtool unit tests in alerts_test.yaml) and
// provisioning files for Grafana's file provider (provisioning/).
//
// The dashboards are part of the product, so they are tested like code:
// the package's tests lint every dashboard, check that every metric a
// panel or an alert queries is one the code registers, and run promtool
// on the alert rules; cmd/moat's observability end-to-end test runs every
// panel's query against a real Prometheus scraping a real moat. This
// package's Go API is what those tests share: loading the dashboards,
// walking their panels and expanding Grafana's template variables.
//
// Every dashboard takes its data source from the $datasource variable and
// filters every query with job=~"$job", instance=~"$instance", so one
// Grafana serves any number of moat instances. README.md lists the panels
// and how to import or provision them.
package dashboards
