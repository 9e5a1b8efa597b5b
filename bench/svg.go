package main

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// chartSeries is one named line or bar group of a panel, with one value per category.
// NaN marks a missing value.
type chartSeries struct {
	name   string
	values []float64
	color  string
	dashed bool
}

// chartPanel is one plot: a y axis starting at zero and categories along the x axis,
// drawn either as lines (a sweep over concurrency) or as grouped bars.
type chartPanel struct {
	title      string
	xLabel     string
	yLabel     string
	categories []string
	series     []chartSeries
	bars       bool
}

const (
	svgWidth       = 960
	svgPanelHeight = 340
	svgTitleHeight = 40
	svgMarginLeft  = 80
	svgMarginRight = 200 // room for the legend
	svgMarginTop   = 36
	svgMarginBot   = 50
)

// seriesColors is a palette that stays distinguishable in grey scale print.
var seriesColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// writeSVG writes panels stacked vertically under a title as a standalone SVG 1.1 document.
func writeSVG(out io.Writer, title string, panels []chartPanel) error {
	w := bufio.NewWriter(out)
	height := svgTitleHeight + len(panels)*svgPanelHeight

	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(w, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", svgWidth, height)
	writeText(w, svgWidth/2, 26, "middle", 16, title)

	for i, panel := range panels {
		writePanel(w, svgTitleHeight+i*svgPanelHeight, panel)
	}

	fmt.Fprintln(w, "</svg>")
	return w.Flush()
}

func writePanel(w *bufio.Writer, top int, panel chartPanel) {
	left := float64(svgMarginLeft)
	right := float64(svgWidth - svgMarginRight)
	plotTop := float64(top + svgMarginTop)
	plotBottom := float64(top + svgPanelHeight - svgMarginBot)

	writeText(w, int(left+(right-left)/2), top+20, "middle", 14, panel.title)

	yMax := niceCeiling(panelMax(panel))
	yOf := func(v float64) float64 { return plotBottom - v/yMax*(plotBottom-plotTop) }

	// Horizontal grid lines with their values, five steps from zero to yMax.
	for step := 0; step <= 5; step++ {
		v := yMax * float64(step) / 5
		y := yOf(v)
		fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#dddddd"/>`+"\n", left, y, right, y)
		writeText(w, int(left)-6, int(y)+4, "end", 11, formatAxisValue(v))
	}
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, plotTop, left, plotBottom)
	fmt.Fprintf(w, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, plotBottom, right, plotBottom)
	fmt.Fprintf(w, `<text x="16" y="%.1f" text-anchor="middle" transform="rotate(-90 16 %.1f)">%s</text>`+"\n",
		(plotTop+plotBottom)/2, (plotTop+plotBottom)/2, escapeXML(panel.yLabel))

	n := len(panel.categories)
	if n == 0 {
		return
	}
	slot := (right - left) / float64(n)
	centerOf := func(i int) float64 { return left + slot*(float64(i)+0.5) }
	for i, c := range panel.categories {
		writeText(w, int(centerOf(i)), int(plotBottom)+18, "middle", 11, c)
	}
	if panel.xLabel != "" {
		writeText(w, int(left+(right-left)/2), int(plotBottom)+38, "middle", 12, panel.xLabel)
	}

	if panel.bars {
		writeBars(w, panel, slot, centerOf, yOf, plotBottom)
	} else {
		writeLines(w, panel, centerOf, yOf)
	}
	writeLegend(w, panel, int(right)+16, int(plotTop))
}

func writeBars(w *bufio.Writer, panel chartPanel, slot float64, centerOf func(int) float64, yOf func(float64) float64, plotBottom float64) {
	groupWidth := slot * 0.7
	barWidth := groupWidth / float64(max(1, len(panel.series)))
	for s, series := range panel.series {
		for i, v := range series.values {
			if i >= len(panel.categories) || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			x := centerOf(i) - groupWidth/2 + float64(s)*barWidth
			y := yOf(v)
			fmt.Fprintf(w, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x, y, barWidth*0.9, plotBottom-y, colorOf(series, s), escapeXML(series.name+": "+formatAxisValue(v)))
		}
	}
}

func writeLines(w *bufio.Writer, panel chartPanel, centerOf func(int) float64, yOf func(float64) float64) {
	for s, series := range panel.series {
		color := colorOf(series, s)
		var points []string
		for i, v := range series.values {
			if i >= len(panel.categories) || math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			points = append(points, fmt.Sprintf("%.1f,%.1f", centerOf(i), yOf(v)))
		}
		if len(points) == 0 {
			continue
		}
		dash := ""
		if series.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(w, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(points, " "), color, dash)
		for _, p := range points {
			x, y, _ := strings.Cut(p, ",")
			fmt.Fprintf(w, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, color)
		}
	}
}

func writeLegend(w *bufio.Writer, panel chartPanel, x, y int) {
	for s, series := range panel.series {
		row := y + s*18
		color := colorOf(series, s)
		dash := ""
		if series.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		width := 2
		if panel.bars {
			width = 8
		}
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="%d"%s/>`+"\n",
			x, row, x+24, row, color, width, dash)
		writeText(w, x+30, row+4, "start", 11, series.name)
	}
}

func colorOf(series chartSeries, index int) string {
	if series.color != "" {
		return series.color
	}
	return seriesColors[index%len(seriesColors)]
}

func writeText(w *bufio.Writer, x, y int, anchor string, size int, text string) {
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="%s" font-size="%d">%s</text>`+"\n", x, y, anchor, size, escapeXML(text))
}

func escapeXML(s string) string {
	var b strings.Builder
	// The error is the writer's, and strings.Builder.Write always returns nil.
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func panelMax(panel chartPanel) float64 {
	m := 0.0
	for _, s := range panel.series {
		for _, v := range s.values {
			if !math.IsNaN(v) && !math.IsInf(v, 0) && v > m {
				m = v
			}
		}
	}
	return m
}

// niceCeiling rounds v up to 1, 2, 2.5 or 5 times a power of ten, so the five grid steps
// fall on round numbers. It returns 1 for v ≤ 0.
func niceCeiling(v float64) float64 {
	if v <= 0 {
		return 1
	}
	magnitude := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*magnitude*(1+1e-9) {
			return m * magnitude
		}
	}
	return 10 * magnitude
}

func formatAxisValue(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}
