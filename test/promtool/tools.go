//go:build tools

// promtool, for `promtool test rules` on the chart's alert rules (test/promtool/run.sh).
// scripts/ensure-promtool.sh builds exactly this command; tools.go keeps its dependencies
// in go.mod for `go mod tidy`.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
