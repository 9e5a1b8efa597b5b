package main

import (
	"os"
	"strings"
	"testing"
)

// settingsRows returns the rows of the settings table of a Markdown file by
// flag, each split into its trimmed cells.
func settingsRows(t *testing.T, file string) map[string][]string {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, table, found := strings.Cut(string(text), "<!-- settings:begin -->")
	table, _, closed := strings.Cut(table, "<!-- settings:end -->")
	if !found || !closed {
		t.Fatalf("%s: no settings table between the settings:begin and settings:end marks", file)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) >= 5 && strings.HasPrefix(cells[0], "`--") {
			rows[strings.Trim(cells[0], "`")] = cells
		}
	}
	return rows
}

// TestSettingsTablesComplete checks that each settings table of the READMEs
// and the configuration docs has a row for every setting, with its variable,
// its earlier names and its default in their columns.
func TestSettingsTablesComplete(t *testing.T) {
	// empty is how each file writes an empty default.
	files := []struct{ path, empty string }{
		{"../../README.md", "(empty)"},
		{"../../README.ru.md", "(пусто)"},
		{"../../docs/configuration.md", "(empty)"},
		{"../../docs/ru/configuration.md", "(пусто)"},
	}
	for _, f := range files {
		file := f.path
		rows := settingsRows(t, file)
		for _, s := range settings() {
			cells, ok := rows["--"+s.name]
			if !ok {
				t.Errorf("%s: no row for --%s", file, s.name)
				continue
			}
			if want := "`" + envName(s.name) + "`"; cells[1] != want {
				t.Errorf("%s: --%s has variable %s, want %s", file, s.name, cells[1], want)
			}
			var aliases []string
			for _, alias := range s.aliases {
				aliases = append(aliases, "`"+alias+"`")
			}
			if want := strings.Join(aliases, ", "); cells[2] != want {
				t.Errorf("%s: --%s has earlier names %q, want %q", file, s.name, cells[2], want)
			}
			want := "`" + s.def + "`"
			if s.def == "" {
				want = f.empty
			}
			if cells[3] != want {
				t.Errorf("%s: --%s has default %s, want %s", file, s.name, cells[3], want)
			}
		}
		if len(rows) != len(settings()) {
			t.Errorf("%s: %d rows for %d settings", file, len(rows), len(settings()))
		}
	}
}
