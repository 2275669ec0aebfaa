package network

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"

	"github.com/husk-runtime/husk/internal/atomicfile"
)

// DefaultConfName is the file WriteDefaultConfig creates.
const DefaultConfName = "10-husk.conflist"

// defaultConf makes a fresh machine work unconfigured: a bridge with NAT to
// the outside, host ports and bandwidth annotations, all from the plugins
// hack/install-cni-plugins.sh builds. The NAT is husk's, once for the
// network (MasqueradeKey), not bridge's ipMasq once per pod.
const defaultConf = `{
  "cniVersion": "1.0.0",
  "name": "husk",
  "huskMasquerade": true,
  "plugins": [
    {
      "type": "bridge",
      "bridge": "husk0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "10.88.0.0/16"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    },
    {
      "type": "bandwidth",
      "capabilities": {"bandwidth": true}
    }
  ]
}
`

// WriteDefaultConfig never overrides an administrator's network: it writes
// only when confDir has no .conf, .conflist or .json file, and reports
// whether it wrote.
func WriteDefaultConfig(confDir string) (bool, error) {
	files, err := libcni.ConfFiles(confDir, confExtensions)
	if err != nil {
		return false, fmt.Errorf("reading CNI config dir: %w", err)
	}
	if len(files) > 0 {
		return false, nil
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return false, fmt.Errorf("creating CNI config dir: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(confDir, DefaultConfName), []byte(defaultConf), 0o644, atomicfile.Options{}); err != nil {
		return false, fmt.Errorf("writing default CNI config: %w", err)
	}
	return true, nil
}
