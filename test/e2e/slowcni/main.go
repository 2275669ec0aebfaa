// Command slowcni is a CNI plugin for tests: chained after the real
// plugins, it waits before passing their result on, so that a test can kill
// the daemon in the middle of a CNI ADD or DEL. It creates "<marker>.<CMD>"
// when it starts, then sleeps "sleep", then waits while the file "hold"
// exists (at most a minute).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

type conf struct {
	CNIVersion string          `json:"cniVersion"`
	Sleep      string          `json:"sleep"`
	Marker     string          `json:"marker"`
	Hold       string          `json:"hold"`
	PrevResult json.RawMessage `json:"prevResult"`
}

func main() {
	if os.Getenv("CNI_COMMAND") == "VERSION" {
		fmt.Println(`{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}`)
		return
	}
	b, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Exit(1)
	}
	var c conf
	if err := json.Unmarshal(b, &c); err != nil {
		fmt.Printf(`{"cniVersion":"1.0.0","code":6,"msg":%q}`, err.Error())
		os.Exit(1)
	}
	if c.Marker != "" {
		_ = os.WriteFile(c.Marker+"."+os.Getenv("CNI_COMMAND"), nil, 0o644)
	}
	if d, err := time.ParseDuration(c.Sleep); err == nil {
		time.Sleep(d)
	}
	for deadline := time.Now().Add(time.Minute); c.Hold != "" && time.Now().Before(deadline); {
		if _, err := os.Stat(c.Hold); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if os.Getenv("CNI_COMMAND") == "ADD" {
		if len(c.PrevResult) == 0 {
			fmt.Printf(`{"cniVersion":%q}`, c.CNIVersion)
			return
		}
		_, _ = os.Stdout.Write(c.PrevResult)
	}
}
