package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

// svgSummary is what a well-formed SVG document contains, as counted by an XML decoder.
type svgSummary struct {
	root     string
	elements map[string]int
	texts    []string
}

func decodeSVG(t *testing.T, data []byte) svgSummary {
	t.Helper()
	summary := svgSummary{elements: map[string]int{}}
	dec := xml.NewDecoder(bytes.NewReader(data))
	depth := 0
	inText := false
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if summary.root != "" {
					t.Fatalf("SVG has a second root element <%s>", tok.Name.Local)
				}
				summary.root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace = %q, want the SVG namespace", tok.Name.Space)
				}
			}
			summary.elements[tok.Name.Local]++
			inText = tok.Name.Local == "text"
			depth++
		case xml.EndElement:
			depth--
			inText = false
		case xml.CharData:
			if inText {
				summary.texts = append(summary.texts, string(tok))
			}
		}
	}
	if depth != 0 {
		t.Fatalf("SVG ends with %d unclosed elements", depth)
	}
	return summary
}

func TestWriteSVGLinesWellFormed(t *testing.T) {
	panels := []chartPanel{
		{
			title:      "Throughput <by> concurrency & \"quotes\"",
			yLabel:     "messages per second",
			categories: []string{"1", "4", "16"},
			series: []chartSeries{
				{name: "publish-json router", values: []float64{100, 400, 1600}},
				{name: "publish-json direct", values: []float64{200, math.NaN(), 3200}, dashed: true},
			},
		},
		{
			title:      "p95 latency",
			yLabel:     "milliseconds",
			categories: []string{"1", "4", "16"},
			series:     []chartSeries{{name: "router", values: []float64{1.5, 2, 8}}},
		},
	}
	var buf bytes.Buffer
	if err := writeSVG(&buf, "rmqrouter & direct", panels); err != nil {
		t.Fatalf("writeSVG: %v", err)
	}
	svg := decodeSVG(t, buf.Bytes())

	if svg.root != "svg" {
		t.Fatalf("root element = %q, want svg", svg.root)
	}
	if got := svg.elements["polyline"]; got != 3 {
		t.Errorf("got %d polylines, want 3 (one per series)", got)
	}
	// 3 + 2 points for the first panel (NaN skipped) and 3 for the second.
	if got := svg.elements["circle"]; got != 8 {
		t.Errorf("got %d circles, want 8", got)
	}
	joined := strings.Join(svg.texts, "\n")
	for _, want := range []string{"rmqrouter & direct", `Throughput <by> concurrency & "quotes"`, "publish-json direct", "16"} {
		if !strings.Contains(joined, want) {
			t.Errorf("SVG text does not contain %q", want)
		}
	}
	if !strings.Contains(buf.String(), `stroke-dasharray`) {
		t.Errorf("dashed series drawn without stroke-dasharray")
	}
}

func TestWriteSVGBarsWellFormed(t *testing.T) {
	panel := chartPanel{
		title:      "Throughput",
		yLabel:     "msg/s",
		bars:       true,
		categories: []string{"publish-json c=16", "fetch-ack c=16"},
		series: []chartSeries{
			{name: "router", values: []float64{1000, 2000}},
			{name: "direct", values: []float64{3000, math.Inf(1)}},
		},
	}
	var buf bytes.Buffer
	if err := writeSVG(&buf, "bars", []chartPanel{panel}); err != nil {
		t.Fatalf("writeSVG: %v", err)
	}
	svg := decodeSVG(t, buf.Bytes())

	// One background rect plus one bar per finite value.
	if got := svg.elements["rect"]; got != 1+3 {
		t.Errorf("got %d rects, want 4 (background and 3 finite bars)", got)
	}
	if got := svg.elements["title"]; got != 3 {
		t.Errorf("got %d bar tooltips, want 3", got)
	}
}

func TestWriteSVGEmptyPanel(t *testing.T) {
	var buf bytes.Buffer
	if err := writeSVG(&buf, "empty", []chartPanel{{title: "nothing"}}); err != nil {
		t.Fatalf("writeSVG: %v", err)
	}
	svg := decodeSVG(t, buf.Bytes())
	if svg.root != "svg" {
		t.Errorf("root element = %q, want svg", svg.root)
	}
}

func TestNiceCeiling(t *testing.T) {
	cases := map[float64]float64{
		0:     1,
		-5:    1,
		0.7:   1,
		1:     1,
		1.2:   2,
		2.1:   2.5,
		3:     5,
		7:     10,
		9500:  10000,
		12000: 20000,
		240:   250,
	}
	for in, want := range cases {
		if got := niceCeiling(in); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceCeiling(%v) = %v, want %v", in, got, want)
		}
	}
}
