/** Types of ./build.mjs, for the TypeScript that imports it (tests, benches). */
export declare const root: string
export declare const entries: Readonly<Record<string, string>>
export declare const isStale: () => boolean
export declare const build: () => Promise<void>
export declare const buildIfStale: () => Promise<void>
