// The package ships no types; this is the shape its README documents (prom2json's output).
declare module 'parse-prometheus-text-format' {
  export interface PromMetric {
    value?: string;
    labels?: Record<string, string>;
  }
  export interface PromFamily {
    name: string;
    help: string;
    type: 'GAUGE' | 'COUNTER' | 'SUMMARY' | 'HISTOGRAM' | 'UNTYPED';
    metrics: PromMetric[];
  }
  export default function parsePrometheusTextFormat(text: string): PromFamily[];
}
