package main

import (
	"os"
	"strings"
	"testing"
)

// TestSettingsTablesComplete checks that each settings table of the READMEs
// and the configuration docs has a row for every setting, with its variable
// and its default.
func TestSettingsTablesComplete(t *testing.T) {
	files := []string{"../../README.md", "../../README.ru.md", "../../docs/configuration.md", "../../docs/ru/configuration.md"}
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, table, found := strings.Cut(string(text), "<!-- settings:begin -->")
		table, _, closed := strings.Cut(table, "<!-- settings:end -->")
		if !found || !closed {
			t.Errorf("%s: no settings table between the settings:begin and settings:end marks", file)
			continue
		}
		rows := map[string]string{}
		for _, line := range strings.Split(table, "\n") {
			if flag, _, ok := strings.Cut(strings.TrimPrefix(line, "| `"), "`"); ok && strings.HasPrefix(flag, "--") {
				rows[flag] = line
			}
		}
		for _, s := range settings() {
			row, ok := rows["--"+s.name]
			if !ok {
				t.Errorf("%s: no row for --%s", file, s.name)
				continue
			}
			if !strings.Contains(row, "`"+envName(s.name)+"`") {
				t.Errorf("%s: the row of --%s does not name %s", file, s.name, envName(s.name))
			}
			def := "`" + s.def + "`"
			if s.def == "" {
				def = "(empty)"
				if strings.Contains(file, ".ru.") || strings.Contains(file, "/ru/") {
					def = "(пусто)"
				}
			}
			if !strings.Contains(row, def) {
				t.Errorf("%s: the row of --%s does not give the default %s", file, s.name, def)
			}
		}
		if len(rows) != len(settings()) {
			t.Errorf("%s: %d rows for %d settings", file, len(rows), len(settings()))
		}
	}
}
