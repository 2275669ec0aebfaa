package main

import (
	"context"
	"os"
	"os/signal"
	"reflect"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/sandbox"
)

// reloadable are the config's keys a running daemon takes from a new
// file on SIGHUP; the others need a restart.
var reloadable = map[string]bool{
	"registry": true, "registry_certs_dirs": true, "global_auth_file": true,
	"pull_progress_timeout": true, "pinned_images": true, "runtimes": true,
	"signature_policy": true, "metrics": true, "debug": true, "log_verbosity": true,
}

// reloadTargets are what a reload changes.
type reloadTargets struct {
	images  *image.Store
	pods    *sandbox.Manager
	metrics *metricsEndpoint
	// verbosity sets the log's verbosity, unless --v set it.
	verbosity func(int)
}

// reloadOnHangup applies the config file anew at each SIGHUP on hup
// (subscribed by serve before anything started, so that a SIGHUP never
// ends the daemon), until ctx ends. load reads the file as the daemon's
// start did, its flags applied.
func reloadOnHangup(ctx context.Context, hup <-chan os.Signal, cur Config, load func() (Config, error), t reloadTargets) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				cur = reload(cur, load, t)
			}
		}
	}()
}

// reload applies what can change of a new config and returns the config
// now in force. A file that does not load changes nothing.
func reload(cur Config, load func() (Config, error), t reloadTargets) Config {
	next, err := load()
	if err != nil {
		klog.ErrorS(err, "Config not reloaded: the new file is refused and the old config stays")
		return cur
	}
	for _, key := range keepRestartOnly(cur, &next) {
		klog.InfoS("Config reload: this setting changes only at a restart, and is ignored until then", "key", key)
	}
	if err := t.images.Reconfigure(imageOptions(next)); err != nil {
		klog.ErrorS(err, "Config not reloaded: the new registry settings are refused and the old config stays")
		return cur
	}
	t.pods.SetRuntimes(runtimePaths(next.Runtimes))
	if err := t.metrics.apply(next.Metrics, next.Debug); err != nil {
		klog.ErrorS(err, "Config reload: the metrics stay where they were served")
		next.Metrics, next.Debug = cur.Metrics, cur.Debug
	}
	t.verbosity(next.LogVerbosity)
	klog.InfoS("Config reloaded", "registries", len(next.Registry), "pinnedImages", len(next.PinnedImages), "runtimeHandlers", len(next.Runtimes))
	return next
}

// keepRestartOnly sets back in next every key that needs a restart to the
// value in force, and names those that differed.
func keepRestartOnly(cur Config, next *Config) []string {
	cv, nv := reflect.ValueOf(cur), reflect.ValueOf(next).Elem()
	var changed []string
	for i := range cv.NumField() {
		key := cv.Type().Field(i).Tag.Get("toml")
		if reloadable[key] || reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		changed = append(changed, key)
		nv.Field(i).Set(cv.Field(i))
	}
	return changed
}

// hangups subscribes to SIGHUP, which otherwise ends the process.
func hangups() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch
}
