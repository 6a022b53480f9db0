//go:build tools

// The commands this module builds, so that `go mod tidy` keeps their dependencies.
// scripts/csi-setup.sh builds exactly these.
package tools

import (
	_ "github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher"
	_ "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
	_ "github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer"
)
