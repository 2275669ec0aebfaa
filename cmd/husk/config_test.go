package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMissingDefaultConfigIsFine(t *testing.T) {
	cfg, err := loadConfig(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil || !reflect.DeepEqual(cfg, defaultConfig()) {
		t.Fatalf("loadConfig = %+v, %v", cfg, err)
	}
}

func TestMissingNamedConfigIsAnError(t *testing.T) {
	if _, err := loadConfig(filepath.Join(t.TempDir(), "absent.toml"), true); err == nil {
		t.Fatal("a config file named on the command line may not be missing")
	}
}

func TestConfigReadsRegistries(t *testing.T) {
	p := writeConfig(t, `
root = "/srv/husk"
pull_progress_timeout = "90s"
stats_max_age = "0s"

[registry."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000", "mirror.example.com"]

[registry."127.0.0.1:5000"]
insecure = true
`)
	cfg, err := loadConfig(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Root != "/srv/husk" || cfg.State != "/run/husk" || cfg.Listen != "/run/husk/husk.sock" {
		t.Errorf("paths %+v", cfg)
	}
	if cfg.StatsMaxAge != 0 || defaultConfig().StatsMaxAge != 30*time.Second {
		t.Errorf("stats_max_age %v, default %v", cfg.StatsMaxAge, defaultConfig().StatsMaxAge)
	}
	if cfg.PullProgressTimeout != 90*time.Second {
		t.Errorf("pull_progress_timeout %v", cfg.PullProgressTimeout)
	}
	if m := cfg.Registry["registry.k8s.io"].Mirrors; len(m) != 2 || m[0] != "http://127.0.0.1:5000" {
		t.Errorf("mirrors %v", m)
	}
	if !cfg.Registry["127.0.0.1:5000"].Insecure {
		t.Error("insecure not read")
	}
}

func TestConfigErrorsNameTheProblem(t *testing.T) {
	for body, want := range map[string]string{
		"root = 1\n":                                                     "root",
		"\n\nlisten = \"a\" \"b\"\n":                                     "line 3",
		"[registry.\"x\"]\nmirrorz = []\n":                               "registry.x.mirrorz",
		"[registry.\"x\"]\nmirrors = [\"http://a/b\"]\n":                 "only a scheme and host",
		"[registry.\"with/slash\"]\nmirrors = [\"http://a\"]\n":          "registry host",
		"pinned_images = [\"pause:*:*\", \"a*b*\"]\n":                    "pinned_images",
		"[runtimes.\"Bad_Name\"]\npath = \"/bin/true\"\n":                "DNS label",
		"[runtimes.runc]\npath = \"runc\"\n":                             "runtimes.runc.path",
		"[runtimes.runc]\npath = \"/nonexistent/runc\"\n":                "not an executable",
		"[metrics]\naddress = \"9680\"\n":                                "metrics.address",
		"[metrics]\naddress = \"unix://run/m.sock\"\n":                   "must be absolute",
		"[debug]\npprof = true\n":                                        "set metrics.address",
		"stats_max_age = \"-1s\"\n":                                      "stats_max_age",
		"[metrics]\naddress = \"0.0.0.0:9680\"\n[debug]\npprof = true\n": "loopback",
	} {
		_, err := loadConfig(writeConfig(t, body), true)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("config %q: %v, want it to mention %q", body, err, want)
		}
	}
}

// deploy/config.toml documents every key: with its examples uncommented it
// must load, and every key of Config must be in it.
func TestDeployedConfigDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../deploy/config.toml")
	if err != nil {
		t.Fatal(err)
	}
	setting := regexp.MustCompile(`^# ([a-z_]+ = |\[)`)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if setting.MatchString(l) {
			lines = append(lines, strings.TrimPrefix(l, "# "))
		}
	}
	doc := strings.Join(lines, "\n")
	if _, err := loadConfig(writeConfig(t, doc), true); err != nil {
		t.Fatalf("deploy/config.toml, uncommented:\n%s\n%v", doc, err)
	}
	var keys func(reflect.Type, string)
	keys = func(typ reflect.Type, prefix string) {
		for f := range typ.Fields() {
			key := prefix + f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				keys(f.Type, key+".")
				continue
			}
			last := key[strings.LastIndex(key, ".")+1:]
			if f.Type.Kind() == reflect.Map {
				last = "[" + key + "."
			} else {
				last += " = "
			}
			if !strings.Contains(doc, last) {
				t.Errorf("deploy/config.toml does not show %s", key)
			}
		}
	}
	keys(reflect.TypeFor[Config](), "")
}
