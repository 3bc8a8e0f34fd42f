// Minimal types for autocannon, what bench/serve.ts uses (the package ships none; @types/autocannon would replace
// this file).
declare module 'autocannon' {
  interface Options {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    connections?: number;
    duration?: number;
    amount?: number;
  }
  interface Result {
    duration: number;
    errors: number;
    timeouts: number;
    non2xx: number;
    '2xx': number;
    latency: { p50: number; p99: number; average: number; max: number };
  }
  export default function autocannon(options: Options): Promise<Result>;
}
